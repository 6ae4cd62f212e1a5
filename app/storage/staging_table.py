"""The staging table and its run log: every statement the service runs against them.

``public.payment_staging`` is written by the ETL and read by the staging poller
(app/intake/staging.py) and the operators (app/ops/staging_admin.py, the health
report, the stats endpoint, ``/metrics``); ``payment_service.staging_process_log``
holds one row per poller run. Each function takes the connection its caller holds,
so the poller's claim, publish and mark stay one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

#: One poller at a time, whichever worker's timer fires (a leader handoff can overlap).
#: A transaction lock, so that Postgres ends it with a frozen holder's idle transaction.
#: Sent without parameters (the simple protocol), so that the transaction holds no
#: snapshot while it waits between statements: a result read through the extended
#: protocol keeps its snapshot, and the xmin horizon with it, for the whole drain.
POLLER_LOCK = """
DO $$
BEGIN
  IF NOT pg_try_advisory_xact_lock(hashtext('payment_service.staging poller')) THEN
    RAISE EXCEPTION 'another drain holds the staging poller lock'
      USING ERRCODE = 'lock_not_available';
  END IF;
END
$$
"""

#: The columns of a claimed row, in the order ``prepare_rows`` reads them.
CLAIM_ROWS = """
SELECT id, reference_number, loan_account_number, cif, amount, payment_date,
       payment_channel, metadata::text AS metadata
FROM public.payment_staging
WHERE NOT processed
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

MARK_PROCESSED = """
UPDATE public.payment_staging SET processed = TRUE, processed_at = timezone('utc', now())
WHERE id = ANY($1::bigint[])
"""

LOG_RUN = """
INSERT INTO payment_service.staging_process_log
  (batch_start_id, batch_end_id, total_records, processed_records, duplicate_records,
   error_records, status, started_at, completed_at, error_details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
"""

OLDEST_UNPROCESSED = "SELECT min(id) FROM public.payment_staging WHERE NOT processed"

BACKLOG = "SELECT count(*) FROM public.payment_staging WHERE NOT processed"

BACKLOG_DETAIL = """
SELECT count(*) AS rows, min(id) AS oldest_id,
       (SELECT created_at FROM public.payment_staging
        WHERE NOT processed ORDER BY id LIMIT 1) AS oldest_created_at
FROM public.payment_staging WHERE NOT processed
"""

#: The health report's two figures in one round trip.
FIGURES = """
SELECT (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS backlog,
       (SELECT max(started_at) FROM payment_service.staging_process_log) AS last_run
"""

LAST_RUNS = """
SELECT batch_start_id, batch_end_id, total_records, processed_records, duplicate_records,
       error_records, status, started_at, completed_at, error_details::text AS error_details
FROM payment_service.staging_process_log
ORDER BY started_at DESC
LIMIT $1
"""

FAILED_RUNS = """
SELECT count(*) OVER () AS failed_total, batch_start_id, started_at,
       error_details::text AS error_details
FROM payment_service.staging_process_log
WHERE status = 'failed'
ORDER BY started_at DESC
LIMIT $1
"""

COMPLETED_SINCE = """
SELECT coalesce(sum(total_records), 0) AS processed,
       avg(extract(epoch FROM completed_at - started_at) * 1000) AS average_ms
FROM payment_service.staging_process_log
WHERE status = 'completed' AND completed_at >= $1
"""

REQUEUE = """
UPDATE public.payment_staging SET processed = FALSE, processed_at = NULL
WHERE id BETWEEN $1 AND $2 AND processed
"""

COUNT_PROCESSED = """
SELECT count(*) FROM public.payment_staging WHERE id BETWEEN $1 AND $2 AND processed
"""


@dataclass
class Run:
    """One poller run, as ``staging_process_log`` holds it."""

    first_id: int
    last_id: int
    total: int
    published: int
    duplicates: int
    errors: int
    status: str
    started_at: datetime
    completed_at: datetime
    details: Any = None


async def take_poller_lock(connection: asyncpg.Connection) -> bool:
    """True when ``connection``'s open transaction is now (or still) the one poller.

    The lock is held by a transaction of its own, on a connection of its own, for
    a whole drain: the batches' transactions come and go on other connections. It
    ends with that transaction: rolled back when the drain ends, or ended by Postgres
    once it has been idle for DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS (a frozen
    worker). Taking it again in the same transaction only says it is still held;
    the statement also keeps the idle timer from running out during a long drain.
    False leaves the transaction aborted: roll it back.
    """
    try:
        await connection.execute(POLLER_LOCK)
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def claim(connection: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    """The oldest ``limit`` unprocessed rows, locked until the transaction ends."""
    return list(await connection.fetch(CLAIM_ROWS, limit))


async def mark_processed(connection: asyncpg.Connection, ids: Sequence[int]) -> None:
    await connection.execute(MARK_PROCESSED, list(ids))


async def log_run(connection: asyncpg.Connection, run: Run) -> None:
    """One ``staging_process_log`` row (times naive UTC, as the column holds them)."""
    await connection.execute(
        LOG_RUN,
        run.first_id,
        run.last_id,
        run.total,
        run.published,
        run.duplicates,
        run.errors,
        run.status,
        run.started_at,
        run.completed_at,
        None if run.details is None else json.dumps(run.details),
    )


async def oldest_unprocessed_id(connection: asyncpg.Connection) -> int | None:
    value = await connection.fetchval(OLDEST_UNPROCESSED)
    return None if value is None else int(value)


async def backlog(connection: asyncpg.Connection | asyncpg.Pool) -> int:
    """Unprocessed rows."""
    return int(await connection.fetchval(BACKLOG))


async def backlog_detail(connection: asyncpg.Connection) -> asyncpg.Record:
    """``rows``, ``oldest_id`` and ``oldest_created_at`` of the unprocessed rows."""
    return await connection.fetchrow(BACKLOG_DETAIL)


async def figures(connection: asyncpg.Connection | asyncpg.Pool) -> tuple[int, datetime | None]:
    """The backlog and the start of the last run (None before the first)."""
    row = await connection.fetchrow(FIGURES)
    if row is None:  # a scalar SELECT always returns one row
        raise LookupError("staging figures query returned nothing")
    return int(row["backlog"]), row["last_run"]


async def last_runs(connection: asyncpg.Connection, runs: int) -> list[asyncpg.Record]:
    """The newest ``runs`` runs, newest first."""
    return list(await connection.fetch(LAST_RUNS, runs))


async def failed_runs(connection: asyncpg.Connection, runs: int) -> list[asyncpg.Record]:
    """The newest ``runs`` failed runs, each with ``failed_total``, the count of all of them."""
    return list(await connection.fetch(FAILED_RUNS, runs))


async def completed_since(connection: asyncpg.Connection, since: datetime) -> asyncpg.Record:
    """``processed`` rows and ``average_ms`` per run of the runs completed since ``since``."""
    return await connection.fetchrow(COMPLETED_SINCE, since)


async def requeue(connection: asyncpg.Connection, first: int, last: int) -> int:
    """Mark the processed rows with ids ``first``..``last`` unprocessed; how many were."""
    status = await connection.execute(REQUEUE, first, last)
    return int(status.split()[-1])


async def count_processed(connection: asyncpg.Connection, first: int, last: int) -> int:
    """How many rows with ids ``first``..``last`` are processed."""
    return int(await connection.fetchval(COUNT_PROCESSED, first, last))
