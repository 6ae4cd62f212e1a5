"""The in-process LRU of committed references (ENABLE_MEMORY_CACHE): dedup's first layer.

Each web process (the worker and every webhook front) and the worker's record path
keep reference → fingerprint + payment_id for up to MEMORY_CACHE_MAX_SIZE recently
decided references. Only committed facts go in: what Postgres returned for a
batch, a table hit, the agent's decision for a webhook, a Redis hot-cache hit. A
recorded payment stays recorded and a reference's recorded fingerprint never
changes, so an entry is never stale and a hit is never wrong; a miss only asks the
next layer (Redis, the RocksDB table, Postgres).

One process's cache is not shared: a front learns from the answers it gives, the
worker from its record agent too, and from :mod:`app.recording.cache_warming` at start.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from app.models import KnownReference
from app.settings import Settings


class MemoryCache:
    """A bounded LRU of :class:`KnownReference` by reference.

    Its callers count hits and misses (``payments_cache_requests_total``): the
    record agent once per batch, since a counter increment in prometheus-client's
    multiprocess mode costs as much as the look-up.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._entries: OrderedDict[str, KnownReference] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, reference: str) -> KnownReference | None:
        """The committed fingerprint and payment_id of ``reference``; None: ask the next layer."""
        known = self._entries.get(reference)
        if known is not None:
            self._entries.move_to_end(reference)
        return known

    def put(self, reference: str, known: KnownReference) -> None:
        """Remember a committed reference as the most recent, dropping the least recent."""
        self._entries[reference] = known
        self._entries.move_to_end(reference)
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def put_many(self, entries: Mapping[str, KnownReference]) -> None:
        for reference, known in entries.items():
            self.put(reference, known)

    def add_older(self, entries: Iterable[tuple[str, KnownReference]]) -> int:
        """Add ``entries`` behind every recent one while there is room (warming); how many went in.

        Never evicts: what the record agent put in meanwhile is more recent than
        anything warming reads.
        """
        added = 0
        for reference, known in entries:
            if len(self._entries) >= self.max_size:
                break
            if reference not in self._entries:
                self._entries[reference] = known
                self._entries.move_to_end(reference, last=False)
                added += 1
        return added

    @property
    def full(self) -> bool:
        return len(self._entries) >= self.max_size


def memory_cache(settings: Settings) -> MemoryCache | None:
    """The process's cache, or None when ENABLE_MEMORY_CACHE is off or its size 0."""
    if not settings.enable_memory_cache or settings.memory_cache_max_size == 0:
        return None
    return MemoryCache(settings.memory_cache_max_size)


def describe(cache: MemoryCache | None) -> str:
    """For the start-up log: what ENABLE_MEMORY_CACHE and MEMORY_CACHE_MAX_SIZE came to."""
    if cache is None:
        return "off (ENABLE_MEMORY_CACHE=false or MEMORY_CACHE_MAX_SIZE=0)"
    return f"up to {cache.max_size} references (MEMORY_CACHE_MAX_SIZE)"
