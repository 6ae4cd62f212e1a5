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

from app.intake.staging import BACKLOG

STAGING_TODAY = """
SELECT coalesce(sum(total_records), 0) AS processed,
       avg(extract(epoch FROM completed_at - started_at) * 1000) AS average_ms
FROM payment_service.staging_process_log
WHERE status = 'completed' AND completed_at >= $1
"""

WEBHOOKS_TODAY = """
SELECT coalesce(sum(requests), 0) AS received,
       coalesce(sum(requests) FILTER (WHERE outcome = 'duplicate'), 0) AS duplicates,
       coalesce(sum(response_ms_total), 0) AS total_ms
FROM payment_service.webhook_request_counts
WHERE minute >= $1
"""


def start_of_day(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def todays_stats(pool: asyncpg.Pool, now: datetime | None = None) -> dict[str, Any]:
    """The plan's stats body for the UTC day of ``now`` (default: now)."""
    midnight = start_of_day(now or datetime.now(UTC))
    async with pool.acquire() as connection:
        staging = await connection.fetchrow(STAGING_TODAY, midnight.replace(tzinfo=None))
        pending = await connection.fetchval(BACKLOG)
        webhooks = await connection.fetchrow(WEBHOOKS_TODAY, midnight)
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
