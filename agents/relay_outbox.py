"""The outbox relay timer: on every worker (rows are claimed with SKIP LOCKED)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.recording.outbox_relay import OutboxRelay

if TYPE_CHECKING:
    from app.service import PaymentService

log = logging.getLogger(__name__)


def register(app: PaymentService) -> None:
    """Add the relay's timer to ``app``."""
    settings = app.settings

    async def relay_outbox() -> None:
        relay = OutboxRelay(
            app.database.pool,
            app.publisher,
            lease_seconds=settings.outbox_relay_min_age_seconds,
        )
        try:
            await relay.relay()
        except Exception as exc:
            # The next tick tries again; the rows stay unsent until then.
            log.warning("outbox relay: %r; retrying at the next tick", exc)

    app.timer(settings.outbox_relay_interval_seconds, name="relay_outbox")(relay_outbox)
