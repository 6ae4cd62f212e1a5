"""GET /api/v1/payments/stats: today's processing figures (the plan's shape), from Postgres.

"Today" is the UTC day. Staging figures come from ``staging_process_log`` (the
batches completed today, and their duration) and the staging backlog; webhook
figures from ``webhook_request_counts`` (app/intake/webhook_counts.py), which every
process answering webhooks writes once a second, so they lag by about that.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.intake import webhook_counts
from app.storage import staging_table


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def todays_stats(pool: asyncpg.Pool, now: datetime | None = None) -> dict[str, Any]:
    """The plan's stats body for the UTC day of ``now`` (default: now)."""
    midnight = start_of_day(now or datetime.now(UTC))
    async with pool.acquire() as connection:
        staging = await staging_table.completed_since(connection, midnight.replace(tzinfo=None))
        pending = await staging_table.backlog(connection)
        webhooks = await webhook_counts.counted_since(connection, midnight)
    received = int(webhooks["received"])
    return {
        "staging": {
            "processed_today": int(staging["processed"]),
            "pending_count": int(pending),
            "average_batch_time_ms": round(float(staging["average_ms"] or 0), 2),
        },
        "webhooks": {
            "received_today": received,
            "duplicate_rate": round(int(webhooks["duplicates"]) / received, 4) if received else 0.0,
            "average_response_time_ms": (
                round(float(webhooks["total_ms"]) / received, 2) if received else 0.0
            ),
        },
    }
