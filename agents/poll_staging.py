"""The staging poller timer: leader only, every STAGING_INTERVAL_SECONDS, draining the backlog."""

from __future__ import annotations

import logging

import faust

from app.intake.process_pool import ProcessPool
from app.intake.staging import StagingPoller
from app.kafka.publisher import Publisher
from app.models import DateWindow
from app.settings import Settings
from app.storage.database import Database

log = logging.getLogger(__name__)


def register(
    app: faust.App,
    *,
    settings: Settings,
    database: Database,
    publisher: Publisher,
    window: DateWindow,
    helpers: ProcessPool,
) -> None:
    """Add the poller's timer to ``app``; the poller is built on the first tick (the pool is up).

    With STAGING_ENABLED=false there is no timer at all: staged rows wait, unclaimed.
    """
    if not settings.staging_enabled:
        return  # said at start (app/__main__.py) and in /health
    pollers: list[StagingPoller] = []

    async def poll_staging() -> None:
        if not pollers:
            pollers.append(
                StagingPoller(
                    database.pool,
                    publisher,
                    batch_size=settings.staging_batch_size,
                    max_retries=settings.staging_max_retries,
                    window=window,
                    helpers=helpers,
                    audit_log=settings.audit_log,
                )
            )
        await pollers[0].drain()

    app.timer(settings.staging_interval_seconds, on_leader=True, name="poll_staging")(poll_staging)
