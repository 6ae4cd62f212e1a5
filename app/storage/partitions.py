"""Partition maintenance: monthly ``payments`` partitions ahead of time, expired ones pruned.

- ``ensure``: the current month and PARTITIONS_AHEAD months after it exist.
  ``payment_service.ensure_payment_partition`` serializes creators with an
  advisory lock, so workers and operators may run it at once.
- ``prune``: months that ended more than PARTITION_RETENTION_MONTHS ago are
  detached with ``DETACH PARTITION ... CONCURRENTLY`` (no lock that blocks
  readers or writers of ``payments``; a short ``lock_timeout`` so it gives way
  rather than queue behind a long query) and then dropped. A detach that was
  interrupted is finished (``FINALIZE``) on the next run. ``dry_run`` reports
  the same list and changes nothing. A month holding rows recorded after the
  accepted window had closed on it is kept, with an error saying what to do
  (belt and braces: the window, :func:`app.months.oldest_kept`, should make that impossible).

The leader's timer (agents/maintain_partitions.py) and ``python -m app
partitions`` both call these functions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time

import asyncpg

from app.months import RECORDING_MARGIN, add_months, expiry, retention_cutoff

log = logging.getLogger(__name__)

#: Months after the current one that must always have a partition.
PARTITIONS_AHEAD = 3

#: How long a detach or drop waits for its lock before giving up (it retries next run).
LOCK_TIMEOUT = "5s"

#: Rows of an expired partition recorded at or after a time (created_at, naive UTC).
YOUNG_ROWS = "SELECT count(*) FROM payment_service.{table} WHERE created_at >= $1"

NAME = re.compile(r"^payments_(\d{4})_(\d{2})$")

LIST = """
SELECT c.relname AS name,
       pg_total_relation_size(c.oid) AS bytes,
       greatest(c.reltuples, 0)::bigint AS rows_estimate,
       i.inhdetachpending AS detach_pending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'payment_service.payments'::regclass
ORDER BY c.relname
"""

ENSURE = "SELECT payment_service.ensure_payment_partition($1::date)"

#: The lock ensure_payment_partition takes; holding it first makes "did I create it?" exact.
CREATORS_LOCK = "SELECT pg_advisory_xact_lock(hashtext('payment_service.payments partitions'))"
EXISTS = "SELECT to_regclass(format('payment_service.%I', $1::text)) IS NOT NULL"


@dataclass(frozen=True)
class Partition:
    """One monthly partition of ``payments``."""

    name: str
    month: date
    bytes: int
    rows_estimate: int
    detach_pending: bool = False


@dataclass(frozen=True)
class Held:
    """An expired partition prune keeps: ``rows`` of it were recorded at or after ``since``."""

    partition: Partition
    rows: int
    since: datetime

    def warning(self, retention_months: int) -> str:
        """What the operator reads: which partition, how many rows, what to do."""
        name = self.partition.name
        since = f"{self.since:%Y-%m-%d %H:%M}"
        # A query for the operator to read and run, never run here.
        query = f"SELECT * FROM payment_service.{name} WHERE created_at >= '{since}'"  # noqa: S608
        return (
            f"{name} is past PARTITION_RETENTION_MONTHS={retention_months} but is not dropped: "
            f"{self.rows} of its rows were recorded on or after {since} UTC, when the accepted "
            "date window no longer reached their month, and may still come again. See them "
            f"with `{query}`; to keep them, raise PARTITION_RETENTION_MONTHS; if they may go, "
            "delete those rows and their payment_references rows, and the next prune drops "
            "the month"
        )


@dataclass(frozen=True)
class PruneRun:
    """What ``prune`` dropped (or, with ``dry_run``, would drop) and what it kept back."""

    dropped: list[Partition] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)


def partition_name(month: date) -> str:
    """The partition of ``month`` (as ensure_payment_partition names it)."""
    return f"payments_{month:%Y_%m}"


def young_since(month: date, retention_months: int) -> datetime:
    """Rows of ``month`` recorded at or after this (naive UTC) came when the window had closed.

    The record agent records a month only while it is :func:`app.months.oldest_kept` with
    RECORDING_MARGIN, that is until RECORDING_MARGIN before its :func:`expiry`.
    """
    return datetime.combine(expiry(month, retention_months), time()) - RECORDING_MARGIN


async def list_partitions(connection: asyncpg.Connection) -> list[Partition]:
    """Every partition of ``payments`` with its size, oldest first."""
    partitions = []
    for row in await connection.fetch(LIST):
        match = NAME.match(row["name"])
        if match is None:
            log.warning("partitions: %s is not named payments_YYYY_MM; left alone", row["name"])
            continue
        partitions.append(
            Partition(
                row["name"],
                date(int(match[1]), int(match[2]), 1),
                int(row["bytes"]),
                int(row["rows_estimate"]),
                bool(row["detach_pending"]),
            )
        )
    return sorted(partitions, key=lambda partition: partition.month)


async def ensure(
    connection: asyncpg.Connection, today: date, ahead: int = PARTITIONS_AHEAD
) -> list[str]:
    """Create the missing partitions from ``today``'s month to ``ahead`` months on.

    Returns the names this call created (concurrent callers each report their own).
    """
    first = date(today.year, today.month, 1)
    created = []
    for month in (add_months(first, n) for n in range(ahead + 1)):
        async with connection.transaction():
            await connection.execute(CREATORS_LOCK)
            existed = await connection.fetchval(EXISTS, partition_name(month))
            name = await connection.fetchval(ENSURE, month)
        if not existed:
            created.append(name)
    return created


async def expired(
    connection: asyncpg.Connection, today: date, retention_months: int
) -> list[Partition]:
    """The partitions ``prune`` would remove, oldest first."""
    cutoff = retention_cutoff(today, retention_months)
    return [p for p in await list_partitions(connection) if p.month < cutoff]


async def held_back(
    connection: asyncpg.Connection, doomed: list[Partition], retention_months: int
) -> list[Held]:
    """The expired partitions holding rows recorded after the window had closed on them."""
    held = []
    for partition in doomed:
        since = young_since(partition.month, retention_months)
        rows = await connection.fetchval(YOUNG_ROWS.format(table=partition.name), since)
        if rows:
            held.append(Held(partition, int(rows), since))
    return held


async def prune(
    connection: asyncpg.Connection,
    today: date,
    retention_months: int,
    *,
    dry_run: bool,
    progress: Callable[[str], None] = log.info,
) -> PruneRun:
    """Detach and drop the expired partitions but the held ones (none with ``dry_run``)."""
    doomed = await expired(connection, today, retention_months)
    cutoff = retention_cutoff(today, retention_months)
    held = await held_back(connection, doomed, retention_months)
    for kept in held:
        log.error("partitions: %s", kept.warning(retention_months))
    kept_names = {kept.partition.name for kept in held}
    doomed = [partition for partition in doomed if partition.name not in kept_names]
    if dry_run or not doomed:
        return PruneRun(doomed, held)
    await connection.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
    try:
        for partition in doomed:
            table = f"payment_service.{partition.name}"
            # Each statement on its own: CONCURRENTLY refuses to run inside a transaction.
            how = "FINALIZE" if partition.detach_pending else "CONCURRENTLY"
            await connection.execute(
                f"ALTER TABLE payment_service.payments DETACH PARTITION {table} {how}"
            )
            await connection.execute(f"DROP TABLE {table}")
            progress(
                f"dropped {partition.name} ({partition.rows_estimate} rows, "
                f"{partition.bytes} bytes; before the cutoff {cutoff})"
            )
    finally:
        await connection.execute("RESET lock_timeout")
    return PruneRun(doomed, held)
