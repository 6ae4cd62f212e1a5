"""Cache warming: at start, the worker's memory cache learns the references recorded lately.

The plan's "Cache warming: pre-load frequent references" and its start-up probe
("Initial cache warming complete"). The worker reads ``payment_references``
created in the last CACHE_WARM_HOURS, newest first, in batches by keyset (the
last row's ``created_at`` and reference, on the ``created_at`` index; never
OFFSET, which rereads every row it skips), until the cache is full or the window
is read, and logs its progress (after the first batch, then every PROGRESS_SECONDS).
They are committed facts (app/recording/reference_cache.py): warming adds them
behind anything the record agent cached meanwhile.

References that share one ``created_at`` (a record agent's batch: up to
RECORD_BATCH_SIZE) are ordered by the reference within it, which the index does
not hold: Postgres sorts that group, cheap at batch sizes (test stack: 300000
references in 4.8 s, 1000 per second; 19 s when all 300000 share one second).

``done`` is set once warming is over (finished, off, or given up on an error that
is not an outage: the cache is only a short cut); GET /health/startup waits for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from datetime import datetime
from typing import Any

from mode import Service

from app.models import KnownReference
from app.recording import failures, payment_store
from app.recording.reference_cache import MemoryCache, describe
from app.storage.database import Database

log = logging.getLogger(__name__)

#: References read per query.
WARM_BATCH_SIZE = 5000

#: A progress line after the first batch, then at most this often.
PROGRESS_SECONDS = 5.0

#: A cursor after every row: the first batch starts at the newest. Naive, as the
#: column is a TIMESTAMP.
_NEWEST = (datetime(9999, 1, 1), "")  # noqa: DTZ001


class CacheWarming(Service):
    """Fills ``cache`` from Postgres once, in the background, after the database starts."""

    def __init__(
        self,
        database: Database,
        cache: MemoryCache | None,
        hours: float,
        *,
        batch_size: int = WARM_BATCH_SIZE,
        **kwargs: Any,
    ) -> None:
        self.database = database
        self.cache = cache
        self.hours = hours
        self.batch_size = batch_size
        self.done = asyncio.Event()
        super().__init__(**kwargs)

    @Service.task
    async def _warm(self) -> None:
        await self.run()

    async def run(self) -> None:
        """Warm the cache if there is one, and set ``done`` whatever happens (but a cancel)."""
        try:
            if self.cache is None or self.hours == 0:
                log.info(
                    "cache warming: nothing to warm (memory cache %s, CACHE_WARM_HOURS=%g)",
                    describe(self.cache),
                    self.hours,
                )
                return
            await self.warm(self.cache)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Outages were retried in warm(); this is something nobody foresaw. The
            # cache fills from decisions instead, and the worker must still start.
            log.error(
                "cache warming stopped (%s); the memory cache fills as references are "
                "decided. Report this with the error",
                failures.describe(exc),
            )
        finally:
            self.done.set()

    async def warm(self, cache: MemoryCache) -> int:
        """Load the recent references into ``cache``; how many went in."""
        started = time.monotonic()
        cursor: tuple[datetime, str] = _NEWEST
        loaded = read = 0
        said = 0.0
        log.info(
            "cache warming: loading references recorded in the last %g h (memory cache %s)",
            self.hours,
            describe(cache),
        )
        while not cache.full:
            rows = await failures.retrying(
                "read recent references for cache warming", functools.partial(self._batch, cursor)
            )
            if not rows:
                break
            read += len(rows)
            loaded += cache.add_older(
                (row["reference_number"], KnownReference(row["fingerprint"], row["payment_id"]))
                for row in rows
            )
            last = rows[-1]
            cursor = (last["created_at"], last["reference_number"])
            if time.monotonic() - said >= PROGRESS_SECONDS:
                said = time.monotonic()
                log.info(
                    "cache warming: %d references loaded (%d read), back to %s",
                    loaded,
                    read,
                    cursor[0].isoformat(timespec="seconds"),
                )
            if len(rows) < self.batch_size:
                break
        log.info(
            "cache warming done: %d references in %.1f s (memory cache %d of %d)",
            loaded,
            time.monotonic() - started,
            len(cache),
            cache.max_size,
        )
        return loaded

    async def _batch(self, cursor: tuple[datetime, str]) -> list[Any]:
        seconds = self.hours * 3600
        return await payment_store.recent_references(
            self.database.pool, seconds, cursor, self.batch_size
        )
