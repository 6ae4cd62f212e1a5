"""At LOG_LEVEL warning the worker must not build a record for every debug call."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.service import create_app
from app.settings import Settings


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restored_logging")
def test_the_worker_keeps_the_root_logger_at_the_configured_level() -> None:
    app = create_app(Settings(), store="memory://")
    worker = app.conf.Worker(app, loglevel="warn")
    worker._setup_logging()
    # Faust's spinner set the root to DEBUG and filtered at the handler.
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    assert logging.getLogger().getEffectiveLevel() == logging.WARNING
