"""The record agent's overlap: the next batch starts at the commit, acks stay in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agents.record_payments import overlapped
from app.recording.recorder import Recorder
from tests.unit.test_recorder import Harness, incoming, payment


class Batches:
    """Batches handed over one by one; each batch's handling is steered by the test."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.log: list[str] = []
        self.commit = {n: asyncio.Event() for n in range(count)}
        self.finish = {n: asyncio.Event() for n in range(count)}

    async def batches(self) -> AsyncIterator[int]:
        for n in range(self.count):
            self.log.append(f"take {n}")
            yield n

    async def handle(self, n: int, committed: Callable[[], None]) -> None:
        self.log.append(f"start {n}")
        await self.commit[n].wait()
        committed()
        await self.finish[n].wait()
        self.log.append(f"end {n}")

    async def done(self, n: int) -> None:
        self.log.append(f"ack {n}")


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_next_batch_starts_at_the_commit_and_acks_stay_in_order() -> None:
    steer = Batches(3)
    running = asyncio.create_task(overlapped(steer.batches(), steer.handle, steer.done))
    await settle()
    assert steer.log == ["take 0", "start 0"]  # 1 waits for 0's commit

    steer.commit[0].set()
    await settle()
    assert steer.log[-2:] == ["take 1", "start 1"]  # 0's tail still runs

    steer.commit[1].set()
    steer.finish[1].set()
    await settle()
    assert "ack 1" not in steer.log  # 1 ended first, but 0 is not acked yet
    assert "take 2" not in steer.log  # at most two batches in hand

    steer.finish[0].set()
    await settle()
    assert steer.log[-6:] == ["end 1", "end 0", "ack 0", "ack 1", "take 2", "start 2"]

    steer.commit[2].set()
    steer.finish[2].set()
    await asyncio.wait_for(running, 1)
    assert steer.log[-2:] == ["end 2", "ack 2"]


async def test_a_batch_that_fails_is_not_acked_nor_any_after_it() -> None:
    steer = Batches(2)

    async def handle(n: int, committed: Callable[[], None]) -> None:
        await steer.handle(n, committed)
        if n == 0:
            raise RuntimeError("batch 0 failed")

    running = asyncio.create_task(overlapped(steer.batches(), handle, steer.done))
    steer.commit[0].set()
    await settle()
    steer.commit[1].set()
    steer.finish[1].set()
    await settle()
    steer.finish[0].set()
    with pytest.raises(RuntimeError, match="batch 0 failed"):
        await asyncio.wait_for(running, 1)
    assert not [line for line in steer.log if line.startswith("ack")]


async def test_cancelling_the_agent_cancels_the_batches_in_hand_unacked() -> None:
    steer = Batches(2)
    running = asyncio.create_task(overlapped(steer.batches(), steer.handle, steer.done))
    steer.commit[0].set()
    await settle()
    assert steer.log[-1] == "start 1"
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    await settle()
    assert not [line for line in steer.log if line.startswith(("ack", "end"))]


async def test_the_recorder_calls_committed_before_its_tail_and_one_batch_at_a_time() -> None:
    harness = Harness()
    recorder: Recorder = harness.recorder
    publish, record = harness.publisher.publish, harness.store.record
    seen: list[str] = []

    async def slow_publish(topic: str, messages: Any) -> Any:
        await asyncio.sleep(0.05)
        seen.append(f"published {topic}")
        return await publish(topic, messages)

    async def slow_record(records: Any) -> Any:
        seen.append(f"transaction {records[0].reference_number}")
        await asyncio.sleep(0.01)  # the other batch must not begin one meanwhile
        seen.append("commit")
        return await record(records)

    harness.publisher.publish = slow_publish  # type: ignore[method-assign]
    harness.store.record = slow_record  # type: ignore[method-assign]

    def committed() -> None:
        seen.append("committed")

    first = asyncio.create_task(recorder.handle([incoming(payment("REF-1"))], committed))
    second = asyncio.create_task(recorder.handle([incoming(payment("REF-2"))], committed))
    reports = await asyncio.gather(first, second)
    # One transaction at a time, and the second batch committed while the first
    # one's events were still being published.
    assert seen[:5] == ["transaction REF-1", "commit", "committed", "transaction REF-2", "commit"]
    assert seen.index("committed", 3) < seen.index("published payment.events")
    assert seen.count("committed") == 2
    assert [report.count("created") for report in reports] == [1, 1]
    assert len(harness.events()) == 2
