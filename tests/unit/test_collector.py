"""The cyclic garbage collector's settings (app/collector.py): frozen start, a clock, a backstop."""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from app import collector

PAUSES = "payments_gc_pause_seconds_count"


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[list[threading.Event]]:
    """The test process's collector as it was, and every clock a test started stopped."""
    threshold = gc.get_threshold()
    clocks: list[threading.Event] = []
    yield clocks
    for stop in clocks:
        stop.set()
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_what_exists_is_frozen_and_the_automatic_collector_is_a_backstop(
    collector_restored: list[threading.Event],
) -> None:
    collector_restored.append(collector.tune(every=3600))
    assert gc.get_freeze_count() > 1000  # this process's modules and objects
    assert gc.get_threshold()[0] == collector.YOUNG_BACKSTOP
    assert gc.isenabled()


def test_cycles_made_after_the_start_are_collected_by_the_clock(
    collector_restored: list[threading.Event],
) -> None:
    collector_restored.append(collector.tune(every=0.05))
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second  # a cycle: reference counting alone never frees it
    for _ in range(100):
        if gone() is None:
            break
        threading.Event().wait(0.02)
    assert gone() is None


def test_each_pass_is_timed(collector_restored: list[threading.Event]) -> None:
    passes = threading.Semaphore(0)

    def collect() -> int:
        passes.release()
        return 0

    before = REGISTRY.get_sample_value(PAUSES) or 0.0
    collector_restored.append(collector.tune(every=0.01, collect=collect))
    for _ in range(3):  # the third pass has begun: the first two are timed
        assert passes.acquire(timeout=2)
    collector_restored[-1].set()
    assert (REGISTRY.get_sample_value(PAUSES) or 0.0) - before >= 2


def test_a_pass_that_finds_many_cycles_says_so(
    collector_restored: list[threading.Event], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    second_pass = threading.Event()

    def collect() -> int:
        calls.append(1)
        if len(calls) == 2:
            second_pass.set()  # the first pass has logged by now: one pass at a time
        return collector.CYCLES_WARNING + 1

    with caplog.at_level(logging.WARNING, logger="app.collector"):
        collector_restored.append(collector.tune(every=0.01, collect=collect))
        assert second_pass.wait(2)
        collector_restored[-1].set()
    assert any(
        f"found {collector.CYCLES_WARNING + 1} objects in reference cycles" in r.getMessage()
        for r in caplog.records
    )
