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

from app.recording import payment_store

log = logging.getLogger(__name__)

CHUNK_ROWS = 10_000


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
    expired = await payment_store.count_references_before(connection, cutoff)
    if dry_run or expired == 0:
        return RetentionRun(cutoff, expired, 0)
    await payment_store.raise_retention_watermark(connection, cutoff)  # before any row goes
    removed = 0
    while True:
        chunk = await payment_store.delete_references_before(connection, cutoff, CHUNK_ROWS)
        removed += chunk
        if chunk:
            progress(f"references: removed {removed} of {expired} created before {cutoff:%Y-%m-%d}")
        if chunk < CHUNK_ROWS:
            return RetentionRun(cutoff, expired, removed)
