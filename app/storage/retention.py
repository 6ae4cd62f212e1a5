"""Reference retention: ``payment_references`` rows older than REFERENCE_CACHE_TTL_DAYS go.

The references table keeps the dedup check small; the payments themselves stay
in their partitions (until partition retention). Before the first row goes, the
run records its cutoff in ``reference_retention``: from then on the record
agent looks a newly claimed reference up in the old partitions, and a late
duplicate stays a duplicate (app/recording/payment_store.py). The RocksDB table expires
its entries on the same schedule (tables/references.py). Rows go in chunks of
CHUNK_ROWS, each its own short transaction, with a progress line per chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000

#: Never moves back: a run with a longer TTL must not switch the late check off.
SET_WATERMARK = """
INSERT INTO payment_service.reference_retention (id, pruned_before) VALUES (TRUE, $1)
ON CONFLICT (id) DO UPDATE
SET pruned_before = greatest(reference_retention.pruned_before, EXCLUDED.pruned_before),
    updated_at = now()
"""

COUNT_EXPIRED = "SELECT count(*) FROM payment_service.payment_references WHERE created_at < $1"

DELETE_CHUNK = """
DELETE FROM payment_service.payment_references
WHERE reference_number IN (
  SELECT reference_number FROM payment_service.payment_references
  WHERE created_at < $1
  ORDER BY created_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED)
"""


@dataclass(frozen=True)
class RetentionRun:
    """What a run found and removed."""

    cutoff: datetime
    expired: int
    removed: int


def reference_cutoff(now: datetime, ttl_days: int) -> datetime:
    """References created before this (naive UTC, as the column) are expired."""
    return now.replace(tzinfo=None) - timedelta(days=ttl_days)


async def prune_references(
    connection: asyncpg.Connection,
    cutoff: datetime,
    *,
    dry_run: bool,
    progress: Callable[[str], None] = log.info,
) -> RetentionRun:
    """Remove references created before ``cutoff`` (count them only with ``dry_run``)."""
    expired = int(await connection.fetchval(COUNT_EXPIRED, cutoff))
    if dry_run or expired == 0:
        return RetentionRun(cutoff, expired, 0)
    await connection.execute(SET_WATERMARK, cutoff)  # committed before any row goes
    removed = 0
    while True:
        status = await connection.execute(DELETE_CHUNK, cutoff, CHUNK_ROWS)
        chunk = int(status.split()[-1])
        removed += chunk
        if chunk:
            progress(f"references: removed {removed} of {expired} created before {cutoff:%Y-%m-%d}")
        if chunk < CHUNK_ROWS:
            return RetentionRun(cutoff, expired, removed)
