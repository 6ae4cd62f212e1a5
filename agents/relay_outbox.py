"""The outbox relay timer: on every worker (rows are claimed with SKIP LOCKED)."""

from __future__ import annotations

import logging

import faust

from app.kafka.publisher import Publisher
from app.recording.outbox_relay import OutboxRelay
from app.settings import Settings
from app.storage.database import Database

log = logging.getLogger(__name__)


def register(
    app: faust.App, *, settings: Settings, database: Database, publisher: Publisher
) -> None:
    """Add the relay's timer to ``app``."""

    async def relay_outbox() -> None:
        relay = OutboxRelay(
            database.pool,
            publisher,
            lease_seconds=settings.outbox_relay_min_age_seconds,
        )
        try:
            await relay.relay()
        except Exception as exc:
            # The next tick tries again; the rows stay unsent until then.
            log.warning("outbox relay: %r; retrying at the next tick", exc)

    app.timer(settings.outbox_relay_interval_seconds, name="relay_outbox")(relay_outbox)
