"""Webhook requests counted per minute, written to Postgres in bulk: the stats' webhook half.

Every process that answers webhooks (the worker and each front) adds each answer
to an in-memory count keyed by (minute, channel, status, outcome), and writes
what it counted with one COPY a second into ``webhook_request_counts``. GET
/api/v1/payments/stats sums today's rows. Counting costs a dict update per
request; a COPY of a few rows a second costs Postgres nothing.

The counts are statistics, not records: when Postgres is away they wait in
memory (at most MAX_PENDING_KEYS keys, the oldest dropped past that with a
warning), and a process that is SIGKILLed loses its last second.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import asyncpg
from mode import Service

from app.settings import Settings
from app.storage.database import connect_options

log = logging.getLogger(__name__)

#: How often the counts go to Postgres.
FLUSH_SECONDS = 1.0
#: Keys kept while Postgres is away (a key is a minute x channel x status x outcome).
MAX_PENDING_KEYS = 100_000

COLUMNS = (
    "minute",
    "channel",
    "status",
    "outcome",
    "requests",
    "response_ms_total",
    "process",
)

Key = tuple[int, str, int, str]

#: What the stats endpoint reads: requests, duplicates and time since a minute.
COUNTED_SINCE = """
SELECT coalesce(sum(requests), 0) AS received,
       coalesce(sum(requests) FILTER (WHERE outcome = 'duplicate'), 0) AS duplicates,
       coalesce(sum(response_ms_total), 0) AS total_ms
FROM payment_service.webhook_request_counts
WHERE minute >= $1
"""


async def counted_since(connection: asyncpg.Connection, since: datetime) -> asyncpg.Record:
    """``received``, ``duplicates`` and ``total_ms`` of the requests counted since ``since``."""
    return await connection.fetchrow(COUNTED_SINCE, since)


class WebhookCounts(Service):
    """Counts answers in memory and writes them to Postgres once a second."""

    def __init__(self, settings: Settings, process: str, **kwargs: Any) -> None:
        self.settings = settings
        self.process = process
        self._counts: dict[Key, list[float]] = defaultdict(lambda: [0, 0.0])
        self._pool: asyncpg.Pool | None = None
        self._failing = False
        super().__init__(**kwargs)

    def add(self, channel: str, status: int, outcome: str, seconds: float) -> None:
        """Count one answer (``seconds``: how long it took)."""
        tally = self._counts[(int(time.time() // 60), channel, status, outcome)]
        tally[0] += 1
        tally[1] += seconds * 1000

    async def on_start(self) -> None:
        # Its own small pool: fronts have none, and stats must not take the agent's connections.
        self._pool = await asyncpg.create_pool(
            **connect_options(self.settings), min_size=0, max_size=1
        )

    @Service.timer(FLUSH_SECONDS)
    async def _flush_periodically(self) -> None:
        await self.flush()

    async def on_stop(self) -> None:
        await self.flush()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def flush(self) -> None:
        """Write what was counted since the last flush (kept for the next one if that fails)."""
        if not self._counts or self._pool is None:
            return
        counts, self._counts = self._counts, defaultdict(lambda: [0, 0.0])
        rows = [
            (
                datetime.fromtimestamp(minute * 60, UTC),
                channel,
                status,
                outcome,
                int(requests),
                total_ms,
                self.process,
            )
            for (minute, channel, status, outcome), (requests, total_ms) in counts.items()
        ]
        try:
            await self._pool.copy_records_to_table(
                "webhook_request_counts",
                schema_name="payment_service",
                columns=COLUMNS,
                records=rows,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._keep(counts)
            if not self._failing:
                log.warning(
                    "webhook counts: cannot write to Postgres (%r); keeping them in memory "
                    "and retrying every %g s (the stats lag until then)",
                    exc,
                    FLUSH_SECONDS,
                )
            self._failing = True
            return
        if self._failing:
            log.info("webhook counts: written to Postgres again")
            self._failing = False

    def _keep(self, counts: dict[Key, list[float]]) -> None:
        """Put ``counts`` back under what came in since, dropping the oldest past the cap."""
        for key, (requests, total_ms) in counts.items():
            tally = self._counts[key]
            tally[0] += requests
            tally[1] += total_ms
        if len(self._counts) > MAX_PENDING_KEYS:
            oldest = sorted(self._counts)[: len(self._counts) - MAX_PENDING_KEYS]
            for key in oldest:
                del self._counts[key]
            log.warning(
                "webhook counts: dropped %d minute counts while Postgres is away "
                "(the stats will undercount those minutes)",
                len(oldest),
            )


def process_name(role: str) -> str:
    """Names the writing process in its rows: role and pid."""
    return f"{role}-{os.getpid()}"
