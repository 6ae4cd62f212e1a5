"""Recent with a fake probe: one fetch per interval, shared by every caller during it."""

from __future__ import annotations

import asyncio

import pytest

from app.ops.recent import Recent


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeProbe:
    """Counts its runs; each run waits until ``release`` is set."""

    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> int:
        self.runs += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.runs


async def test_a_thousand_concurrent_callers_share_one_fetch() -> None:
    clock, probe = FakeClock(), FakeProbe()
    recent: Recent[int] = Recent("fake", 1.0, clock)
    callers = [asyncio.create_task(recent.get(probe)) for _ in range(1000)]
    await asyncio.sleep(0)
    probe.release.set()
    answers = await asyncio.gather(*callers)
    assert probe.runs == 1
    assert answers == [(1, 0.0)] * 1000


async def test_the_result_is_reused_until_it_is_max_age_old_and_says_its_age() -> None:
    clock, probe = FakeClock(), FakeProbe()
    probe.release.set()
    recent: Recent[int] = Recent("fake", 1.0, clock)
    assert await recent.get(probe) == (1, 0.0)
    clock.now += 0.75
    assert await recent.get(probe) == (1, 0.75)
    clock.now += 0.25
    assert await recent.get(probe) == (2, 0.0)
    assert probe.runs == 2


async def test_a_failed_fetch_reaches_every_waiting_caller_and_is_not_kept() -> None:
    clock, probe = FakeClock(), FakeProbe()
    probe.error = ConnectionError("refused")
    recent: Recent[int] = Recent("fake", 1.0, clock)
    callers = [asyncio.create_task(recent.get(probe)) for _ in range(3)]
    await asyncio.sleep(0)
    probe.release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(result) for result in results] == [ConnectionError] * 3
    probe.error = None
    assert await recent.get(probe) == (2, 0.0)


async def test_a_caller_that_goes_away_leaves_the_fetch_to_the_others() -> None:
    clock, probe = FakeClock(), FakeProbe()
    recent: Recent[int] = Recent("fake", 1.0, clock)
    leaving = asyncio.create_task(recent.get(probe))
    staying = asyncio.create_task(recent.get(probe))
    await asyncio.sleep(0)
    leaving.cancel()
    probe.release.set()
    assert await staying == (1, 0.0)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert probe.runs == 1


async def test_zero_max_age_fetches_every_time_but_still_shares_one_in_flight() -> None:
    clock, probe = FakeClock(), FakeProbe()
    recent: Recent[int] = Recent("fake", 0.0, clock)
    together = [asyncio.create_task(recent.get(probe)) for _ in range(5)]
    await asyncio.sleep(0)
    probe.release.set()
    assert {answer for answer, _ in await asyncio.gather(*together)} == {1}
    assert await recent.get(probe) == (2, 0.0)
