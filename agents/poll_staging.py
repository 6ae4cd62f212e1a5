"""The staging poller timer: leader only, every STAGING_INTERVAL_SECONDS, draining the backlog."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.intake.staging import StagingPoller

if TYPE_CHECKING:
    from app.service import PaymentService

log = logging.getLogger(__name__)


def register(app: PaymentService) -> None:
    """Add the poller's timer to ``app``."""
    settings = app.settings

    async def poll_staging() -> None:
        poller = app.staging_poller
        if poller is None:
            poller = app.staging_poller = StagingPoller(
                app.database.pool,
                app.publisher,
                batch_size=settings.staging_batch_size,
                max_retries=settings.staging_max_retries,
                window=app.date_window,
                helpers=app.helpers,
                audit_log=settings.audit_log,
            )
        await poller.drain()

    app.timer(settings.staging_interval_seconds, on_leader=True, name="poll_staging")(poll_staging)
