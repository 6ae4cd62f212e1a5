"""The record agent's batches: the stream's queue taken a batch at a time (take_batches)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from faust.events import Event
from faust.types.tuples import ConsumerMessage
from mode import Service
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from app.kafka.faust_patches import take_batches

GENERATION = 7


class FakeConsumer:
    def __init__(self) -> None:
        self.tracked: list[int] = []

    def track_message(self, message: ConsumerMessage) -> None:
        self.tracked.append(message.offset)


class FakeFlow:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class FakeTopics:
    def acks_enabled_for(self, topic: str) -> bool:
        return topic == "payment.intake"


class FakeApp:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.flow_control = FakeFlow()
        self.topics = FakeTopics()
        self.consumer_generation_id = GENERATION


class FakeChannel:
    def __init__(self) -> None:
        self.queue: ThrowableQueue[Any] = ThrowableQueue(
            maxsize=100, flow_control=FlowControlEvent()
        )


class FakeStream(Service):
    """What take_batches reads of a Faust stream; a mode Service, so it waits and stops as one."""

    def __init__(self) -> None:
        super().__init__()
        self.app = FakeApp()
        self.channel = FakeChannel()
        self.enable_acks = True

    def put(self, offset: int, generation: int = GENERATION) -> Event:
        message = ConsumerMessage(
            "payment.intake", 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
        )
        event = Event(self.app, b"k", b"v", None, message)  # type: ignore[arg-type]
        self.channel.queue.put_nowait(event)
        return event


def offsets(batch: list[Any]) -> list[int]:
    return [event.message.offset for event in batch]


async def next_batch(batches: AsyncIterator[list[Any]], within: float = 1.0) -> list[Any]:
    return await asyncio.wait_for(anext(batches), within)


async def test_what_is_queued_goes_as_one_batch_in_order_each_tracked_once() -> None:
    stream = FakeStream()
    for offset in range(5):
        stream.put(offset)
    batches = take_batches(stream, 1000, within=10.0)
    assert offsets(await next_batch(batches)) == [0, 1, 2, 3, 4]
    assert stream.enable_acks is False  # the caller acks
    stream.put(5)
    stream.put(6)
    assert offsets(await next_batch(batches)) == [5, 6]
    assert stream.app.consumer.tracked == [0, 1, 2, 3, 4, 5, 6]


async def test_a_batch_holds_at_most_max_events() -> None:
    stream = FakeStream()
    for offset in range(5):
        stream.put(offset)
    batches = take_batches(stream, 2, within=10.0)
    assert [offsets(await next_batch(batches)) for _ in range(3)] == [[0, 1], [2, 3], [4]]


async def test_a_lone_event_goes_at_once_not_after_the_window() -> None:
    stream = FakeStream()
    batches = take_batches(stream, 1000, within=30.0)
    waiting = asyncio.ensure_future(next_batch(batches, within=2.0))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # nothing queued: it waits
    stream.put(1)
    assert offsets(await waiting) == [1]


async def test_what_the_fetch_loop_hands_over_meanwhile_joins_the_batch() -> None:
    stream = FakeStream()

    async def fetch_loop() -> None:
        for offset in range(3):
            stream.put(offset)
            await asyncio.sleep(0)

    batches = take_batches(stream, 1000, within=10.0)
    waiting = asyncio.ensure_future(next_batch(batches))
    await asyncio.sleep(0)  # take_batches waits for the first
    await fetch_loop()
    assert offsets(await waiting) == [0, 1, 2]


async def test_events_of_a_stopped_flow_or_an_older_generation_are_left_out_untracked() -> None:
    stream = FakeStream()
    stream.put(0, generation=GENERATION - 1)
    stream.put(1)
    batches = take_batches(stream, 1000, within=10.0)
    assert offsets(await next_batch(batches)) == [1]
    stream.app.flow_control.active = False  # a rebalance
    waiting = asyncio.ensure_future(next_batch(batches))
    stream.put(2)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    stream.app.flow_control.active = True
    stream.put(3)
    assert offsets(await waiting) == [3]
    assert stream.app.consumer.tracked == [1, 3]


async def test_the_stream_stopping_ends_the_batches() -> None:
    stream = FakeStream()
    batches = take_batches(stream, 1000, within=0.05)
    waiting = asyncio.ensure_future(next_batch(batches, within=2.0))
    await asyncio.sleep(0.1)  # past a window or two with nothing queued
    await stream.stop()
    with pytest.raises(StopAsyncIteration):  # no batch from a stopped stream
        await waiting
