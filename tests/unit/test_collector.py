"""The cyclic garbage collector's settings (app/collector.py): frozen start, larger young pass."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app import collector


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    """The test process's collector as it was."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """Two objects that refer to each other, dropped: reference counting alone never frees them."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


def test_what_exists_is_frozen_and_the_young_generation_is_larger() -> None:
    collector.tune()
    assert gc.get_freeze_count() > 1000  # this process's modules and objects
    assert gc.get_threshold() == (collector.YOUNG, collector.MIDDLE, collector.OLD)
    assert gc.isenabled()


def test_garbage_from_before_the_start_is_collected_not_frozen() -> None:
    gone = cycle()
    collector.tune()
    assert gone() is None


def test_cycles_made_after_the_start_are_still_collected_automatically() -> None:
    collector.tune()
    gone = cycle()
    assert gone() is not None  # 2 new objects: no pass yet
    held = [[] for _ in range(collector.YOUNG + 100)]  # new container objects, alive
    assert gone() is None  # the young pass they brought on found the cycle
    del held
