"""Cache warming (app/recording/cache_warming.py) over a fake payment_references, by keyset."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, cast

from app.models import KnownReference
from app.recording.cache_warming import CacheWarming
from app.recording.reference_cache import MemoryCache
from app.storage.database import Database

#: payment_references.created_at is a naive TIMESTAMP.
NOW = datetime(2026, 12, 2, 12, 0)  # noqa: DTZ001


class FakePool:
    """``payment_references`` as rows; answers RECENT_REFERENCES as Postgres would."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[tuple[Any, ...]] = []

    async def fetch(
        self, query: str, seconds: float, before: datetime, reference: str, limit: int
    ) -> list[dict[str, Any]]:
        self.queries.append((before, reference, limit))
        assert "OFFSET" not in query
        since = NOW - timedelta(seconds=seconds)
        chosen = [
            row
            for row in self.rows
            if row["created_at"] >= since
            and (row["created_at"], row["reference_number"]) < (before, reference)
        ]
        chosen.sort(key=lambda row: (row["created_at"], row["reference_number"]), reverse=True)
        return chosen[:limit]


class FakeDatabase:
    def __init__(self, pool: FakePool) -> None:
        self.pool = pool


def row(n: int, age: timedelta) -> dict[str, Any]:
    return {
        "reference_number": f"REF-{n:03d}",
        "fingerprint": f"{n:064x}",
        "payment_id": uuid.UUID(int=n),
        "created_at": NOW - age,
    }


def warming(rows: list[dict[str, Any]], size: int, hours: float = 24) -> CacheWarming:
    database = cast(Database, FakeDatabase(FakePool(rows)))
    return CacheWarming(database, MemoryCache(size), hours, batch_size=4)


async def test_the_window_is_read_newest_first_in_keyset_batches() -> None:
    # Ten rows an hour apart, three sharing one second (the cursor's tie-break), and two
    # older than the window.
    rows = [row(n, timedelta(hours=n)) for n in range(10)]
    rows += [row(n, timedelta(hours=3)) for n in (20, 21)]
    rows += [row(n, timedelta(hours=30)) for n in (30, 31)]
    warm = warming(rows, size=100)
    cache = cast(MemoryCache, warm.cache)

    loaded = await warm.warm(cache)

    assert loaded == 12
    assert cache.get("REF-030") is None
    assert cache.get("REF-021") == KnownReference(f"{21:064x}", uuid.UUID(int=21))
    pool = cast(FakePool, cast(Any, warm.database).pool)
    # 4 + 4 + 4, then one more query finds none; the second batch starts inside the second
    # shared by REF-021, REF-020 and REF-003, and loses none of them.
    assert [query[:2] for query in pool.queries[1:]] == [
        (NOW - timedelta(hours=3), "REF-021"),
        (NOW - timedelta(hours=5), "REF-005"),
        (NOW - timedelta(hours=9), "REF-009"),
    ]


async def test_warming_stops_at_the_cache_size_with_the_newest() -> None:
    warm = warming([row(n, timedelta(minutes=n)) for n in range(50)], size=6)
    cache = cast(MemoryCache, warm.cache)

    loaded = await warm.warm(cache)

    assert (loaded, len(cache)) == (6, 6)
    assert cache.get("REF-005") is not None
    assert cache.get("REF-006") is None
    assert len(cast(Any, warm.database).pool.queries) == 2  # stops once full


async def test_the_startup_event_is_set_when_warming_is_off_or_done() -> None:
    off = CacheWarming(cast(Database, FakeDatabase(FakePool([]))), None, 24)
    await off.run()
    warm = warming([row(1, timedelta(hours=1))], size=10)
    assert not warm.done.is_set()
    await warm.run()

    assert off.done.is_set()
    assert warm.done.is_set()
    assert len(cast(MemoryCache, warm.cache)) == 1
