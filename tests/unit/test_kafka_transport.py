"""The service's Kafka transport is the one with the offset fixes, and every ack reaches it."""

from __future__ import annotations

import faust.streams

from app.kafka_transport import Consumer
from app.service import create_app
from app.settings import Settings


def test_the_service_routes_every_ack_through_its_consumer() -> None:
    """The offset fixes (app/kafka_transport.py) need Faust's pure-Python stream iterator."""
    app = create_app(Settings(), store="memory://")
    assert faust.streams._CStreamIterator is None  # type: ignore[attr-defined]
    assert app.transport.Consumer is Consumer
