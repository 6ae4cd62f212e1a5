"""The memory cache (app/recording/reference_cache.py) and the record path's layers, with fakes."""

from __future__ import annotations

from collections import Counter
from typing import Any

from prometheus_client import REGISTRY

from agents.record_payments import count
from app.models import KnownReference, payment_id_for
from app.recording.recorder import Recorder
from app.recording.reference_cache import MemoryCache, memory_cache
from app.settings import Settings
from tests.unit.test_recorder import EVENTS, WINDOW, Harness, incoming, payment


def known(reference: str, fingerprint: str = "f" * 64) -> KnownReference:
    return KnownReference(fingerprint, payment_id_for(reference))


def cache_requests() -> Counter[tuple[str, str]]:
    """payments_cache_requests_total by (layer, result), as the default registry holds it."""
    totals: Counter[tuple[str, str]] = Counter()
    for metric in REGISTRY.collect():
        if metric.name != "payments_cache_requests":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                totals[labels["layer"], labels["result"]] = int(sample.value)
    return totals


def moved(before: Counter[tuple[str, str]]) -> dict[tuple[str, str], int]:
    after = cache_requests()
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_the_least_recently_used_reference_goes_first() -> None:
    cache = MemoryCache(2)
    cache.put("A", known("A"))
    cache.put("B", known("B"))
    assert cache.get("A") == known("A")  # A is now the most recent
    cache.put("C", known("C"))

    assert cache.get("B") is None
    assert (cache.get("A"), cache.get("C")) == (known("A"), known("C"))
    assert len(cache) == 2


def test_warming_adds_behind_recent_entries_and_never_evicts() -> None:
    cache = MemoryCache(3)
    cache.put("RECENT", known("RECENT"))

    added = cache.add_older([(f"OLD-{n}", known(f"OLD-{n}")) for n in range(5)])

    assert added == 2
    assert cache.full
    cache.put("NEWER", known("NEWER"))  # evicts the oldest warmed entry, not RECENT
    assert cache.get("RECENT") == known("RECENT")
    assert cache.get("OLD-1") is None
    assert cache.get("OLD-0") == known("OLD-0")


def test_the_switch_and_a_size_of_zero_turn_the_cache_off() -> None:
    assert memory_cache(Settings(enable_memory_cache=False)) is None
    assert memory_cache(Settings(memory_cache_max_size=0)) is None
    cache = memory_cache(Settings(memory_cache_max_size=7))
    assert cache is not None
    assert cache.max_size == 7


def with_memory(harness: Harness, cache: MemoryCache) -> Harness:
    harness.recorder = Recorder(
        harness.store,
        harness.table,
        harness.publisher,
        events_topic=EVENTS,
        window=WINDOW,
        sleep=harness.recorder.sleep,
        memory=cache,
    )
    return harness


async def test_the_record_path_asks_memory_then_the_table_then_postgres() -> None:
    cache = MemoryCache(100)
    harness = with_memory(Harness(), cache)
    before = cache_requests()

    first = await harness.recorder.handle([incoming(payment("REF-1"))])
    count(first)
    # Committed: the cache knows it now, and answers before the table is asked.
    harness.table.data.clear()
    again = await harness.recorder.handle([incoming(payment("REF-1", source_id="2"))])
    count(again)

    assert [d.outcome for d in first.decisions] == ["created"]
    assert [d.outcome for d in again.decisions] == ["duplicate"]
    assert (again.memory_hits, again.table_hits, again.postgres_answers) == (1, 0, 0)
    assert harness.store.transactions == 1
    assert moved(before) == {
        ("memory", "miss"): 1,
        ("memory", "hit"): 1,
        ("table", "miss"): 1,
        ("database", "miss"): 1,
    }


async def test_references_postgres_already_held_are_cached_as_recorded() -> None:
    cache = MemoryCache(100)
    harness = with_memory(Harness(), cache)
    recorded = payment("REF-2", amount="10.00")
    await harness.recorder.handle([incoming(recorded)])
    harness.table.data.clear()
    cache._entries.clear()  # a restarted worker: only Postgres knows
    before = cache_requests()

    report = await harness.recorder.handle([incoming(payment("REF-2", amount="99.00"))])
    count(report)

    assert [d.outcome for d in report.decisions] == ["conflict"]
    # What is cached is what Postgres holds, never the conflicting record's fields.
    assert cache.get("REF-2") == KnownReference(recorded.fingerprint, recorded.payment_id)
    assert moved(before) == {
        ("memory", "miss"): 1,
        ("table", "miss"): 1,
        ("database", "hit"): 1,
    }


async def test_without_a_memory_cache_the_answers_are_the_same() -> None:
    outcomes: list[list[str]] = []
    for cache in (MemoryCache(100), None):
        harness = Harness()
        if cache is not None:
            with_memory(harness, cache)
        batches: list[Any] = [
            [payment("A"), payment("B")],
            [payment("A", source_id="2"), payment("B", amount="1.00")],
        ]
        decided: list[str] = []
        for batch in batches:
            report = await harness.recorder.handle([incoming(r) for r in batch])
            decided += [d.outcome for d in report.decisions]
        outcomes.append(decided)

    assert outcomes[0] == outcomes[1] == ["created", "created", "duplicate", "conflict"]
