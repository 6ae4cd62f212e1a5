"""The stalled-session timer: on every worker, a quarter of DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS.

Ends this service's Postgres sessions that wait mid-statement for a client that
stopped (app/storage/stalled_sessions.py). Every worker runs it, since the frozen
one may be the leader; two ending the same session is harmless.
"""

from __future__ import annotations

import logging

import faust

from app.settings import Settings
from app.storage import stalled_sessions
from app.storage.database import Database

log = logging.getLogger(__name__)


def register(app: faust.App, *, settings: Settings, database: Database) -> None:
    """Add the timer to ``app``; none when the timeout is 0 (sessions are never ended)."""
    timeout = settings.db_idle_in_transaction_timeout_seconds
    if not timeout:
        return

    async def end_stalled_sessions() -> None:
        try:
            async with database.pool.acquire() as connection:
                await stalled_sessions.end_stalled(connection, timeout)
        except Exception as exc:
            log.warning("stalled sessions: %r; looking again at the next tick", exc)

    app.timer(stalled_sessions.check_interval(timeout), name="end_stalled_sessions")(
        end_stalled_sessions
    )
