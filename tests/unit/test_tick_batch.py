"""TickBatch: the calls of one event-loop tick go to Redis in one send (offline)."""

from __future__ import annotations

import asyncio

import pytest

from app.storage.redis_connection import TickBatch


class Sender:
    """Doubles each item; keeps each send's items. ``error``: raised instead."""

    def __init__(self, error: BaseException | None = None, short: bool = False) -> None:
        self.sends: list[list[int]] = []
        self.error = error
        self.short = short

    async def __call__(self, items: list[int]) -> list[int]:
        self.sends.append(items)
        await asyncio.sleep(0)  # the round trip
        if self.error is not None:
            raise self.error
        doubled = [2 * item for item in items]
        return doubled[:-1] if self.short else doubled


async def test_one_send_per_tick_each_caller_hearing_its_own_result() -> None:
    send = Sender()
    batch = TickBatch(send, limit=10)

    first = await asyncio.gather(*(batch(i) for i in range(5)))
    second = await batch(7)

    assert first == [0, 2, 4, 6, 8]
    assert second == 14
    assert send.sends == [[0, 1, 2, 3, 4], [7]]


async def test_a_tick_with_more_than_the_limit_is_split_in_order() -> None:
    send = Sender()
    batch = TickBatch(send, limit=3)

    results = await asyncio.gather(*(batch(i) for i in range(7)))

    assert send.sends == [[0, 1, 2], [3, 4, 5], [6]]
    assert results == [2 * i for i in range(7)]


async def test_a_failed_send_raises_in_every_caller_of_it() -> None:
    batch = TickBatch(Sender(ConnectionError("Redis away")), limit=10)

    results = await asyncio.gather(*(batch(i) for i in range(3)), return_exceptions=True)

    assert [type(result) for result in results] == [ConnectionError] * 3


async def test_a_send_that_answers_too_few_fails_its_callers_instead_of_hanging() -> None:
    batch = TickBatch(Sender(short=True), limit=10)

    results = await asyncio.gather(*(batch(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(result, RuntimeError) for result in results)


async def test_a_caller_that_goes_away_does_not_hold_up_the_others() -> None:
    send = Sender()
    batch = TickBatch(send, limit=10)
    leaving = asyncio.ensure_future(batch(1))
    staying = asyncio.ensure_future(batch(2))
    await asyncio.sleep(0)  # both queued for the tick's send
    leaving.cancel()

    assert await staying == 4
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert send.sends == [[1, 2]]


async def test_a_cancelled_send_cancels_its_callers() -> None:
    started = asyncio.Event()

    async def stuck(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(3600)
        return items

    batch = TickBatch(stuck, limit=10)
    caller = asyncio.ensure_future(batch(1))
    await started.wait()
    (sending,) = batch._sending  # the service stopping cancels its tasks
    sending.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(caller, timeout=5)
