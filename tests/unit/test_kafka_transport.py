"""The service's Kafka transport is the one with the offset fixes, and every ack reaches it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import faust.streams
import pytest
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError, RequestTimedOutError
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from prometheus_client import REGISTRY

from app.kafka import transport as kafka_transport
from app.kafka.topics import INTAKE
from app.kafka.transport import Consumer, ConsumerThread
from app.service import create_app
from app.settings import Settings


def test_the_service_routes_every_ack_through_its_consumer() -> None:
    """The offset fixes (app/kafka/transport.py) need Faust's pure-Python stream iterator."""
    app = create_app(Settings(), store="memory://")
    assert faust.streams._CStreamIterator is None  # type: ignore[attr-defined]
    assert app.transport.Consumer is Consumer


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the app (Faust binds to the current loop) and the test, then closed."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def _offline_consumer(
    committed: dict[TP, int | None], log_start: int, assigned: set[TP]
) -> tuple[Consumer, list[dict[TP, int]]]:
    """The service's consumer with its broker calls replaced by fakes; also the seeks it made."""
    app = create_app(Settings(), store="memory://")
    app.topics.acking_topics.add(INTAKE)  # as when the record agent subscribes
    consumer = app.consumer
    assert isinstance(consumer, Consumer)
    seeks: list[dict[TP, int]] = []

    async def seek_to_committed() -> Mapping[TP, int]:
        return committed  # type: ignore[return-value]  # aiokafka answers None for no commit

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        return {tp: log_start for tp in partitions}

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        seeks.append(dict(partitions))

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    consumer.earliest_offsets = earliest_offsets  # type: ignore[method-assign]
    consumer.seek_wait = seek_wait  # type: ignore[method-assign]
    consumer.assignment = lambda: assigned  # type: ignore[method-assign]
    return consumer, seeks


def test_a_partition_without_a_commit_starts_at_the_log_start(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # Without a commit, aiokafka does not seek and Faust does not check the head:
    # a partition kept across a rebalance resumed past records it never processed.
    fresh, zero, started = TP(INTAKE, 0), TP(INTAKE, 1), TP(INTAKE, 2)
    consumer, seeks = _offline_consumer(
        {fresh: None, zero: 0, started: 500}, log_start=7, assigned={fresh, zero, started}
    )
    loop.run_until_complete(consumer.perform_seek())

    # One seek, after getmany's filter is set (see the next test): all of them.
    assert seeks == [{fresh: 7, zero: 7, started: 500}]
    assert {tp: consumer._committed_offset[tp] for tp in (fresh, zero, started)} == {
        fresh: 7,
        zero: 7,
        started: 500,
    }


def test_a_commit_below_the_log_start_resumes_at_the_log_start(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    # The topic's retention deleted offsets 5..19 before the group processed them.
    # Seeking to 5 answered "out of range", aiokafka reset to 20, the head looked
    # missing and the repair sought back to 5, for ever: nothing committed again.
    tp, kept = TP(INTAKE, 0), TP(INTAKE, 1)
    consumer, seeks = _offline_consumer({tp: 5, kept: 30}, log_start=20, assigned={tp, kept})
    lost = REGISTRY.get_sample_value("payments_intake_records_lost_total", {"topic": INTAKE}) or 0

    loop.run_until_complete(consumer.perform_seek())

    assert seeks == [{tp: 20, kept: 30}]
    assert consumer._committed_offset[tp] == 20
    assert "records 5..19 were deleted by the topic's retention" in caplog.text
    after = REGISTRY.get_sample_value("payments_intake_records_lost_total", {"topic": INTAKE})
    assert after == lost + 15
    consumer._acked[tp] = [20, 21, 22]
    assert consumer._new_offset(tp) == 23


def test_a_head_gap_below_the_log_start_is_not_sought_for_ever(
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Retention overtook a partition the worker held: its head (5..19) is gone, and
    # later records (20, 21) were processed. The repair must resume at the log start.
    tp = TP(INTAKE, 0)
    consumer, seeks = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    loop.run_until_complete(consumer.perform_seek())
    seeks.clear()

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        return {tp: 20 for tp in partitions}

    consumer.earliest_offsets = earliest_offsets  # type: ignore[method-assign]
    clock = FakeClock()
    monkeypatch.setattr(kafka_transport, "time", clock)
    consumer._acked[tp] = [20, 21]
    assert consumer._new_offset(tp) is None  # the head gap starts
    clock.now += kafka_transport.HEAD_GAP_GRACE_SECONDS
    assert consumer._new_offset(tp) is None  # the repair starts
    loop.run_until_complete(asyncio.gather(*consumer._repairs))

    assert seeks == [{tp: 20}]
    assert "records 5..19 were deleted" in caplog.text
    assert consumer._new_offset(tp) == 22


def test_a_kept_partition_commits_nothing_before_its_seek(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # After a rebalance Faust forgets every partition's committed offset and resumes
    # the flow before it seeks. A kept partition's fetcher went on past records of
    # the old generation nobody processed (0..799); records 800.. were processed in
    # that window, and the commit that ran while the seek awaited the log start
    # committed 800..850 over the lost head.
    tp = TP(INTAKE, 8)
    consumer, seeks = _offline_consumer({tp: None}, log_start=0, assigned={tp})
    consumer._acked[tp] = list(range(800, 851))
    during_seek: list[dict[TP, int]] = []
    log_start = consumer.earliest_offsets

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        during_seek.append(consumer._filter_committable_offsets([tp]))  # Faust's commit
        return await log_start(*partitions)

    consumer.earliest_offsets = earliest_offsets  # type: ignore[method-assign]
    assert consumer._filter_committable_offsets([tp]) == {}  # before the seek
    loop.run_until_complete(consumer.perform_seek())

    assert during_seek == [{}]
    assert seeks == [{tp: 0}]
    assert consumer._filter_committable_offsets([tp]) == {}  # 0..799 still to come
    consumer._acked[tp] = list(range(851))
    assert consumer._filter_committable_offsets([tp]) == {tp: 851}


def test_nothing_commits_past_an_unprocessed_head(loop: asyncio.AbstractEventLoop) -> None:
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: None}, log_start=0, assigned={tp})
    loop.run_until_complete(consumer.perform_seek())

    consumer._acked[tp] = [3, 4, 5]  # offsets 0..2 fetched before a seek, never processed
    assert consumer._new_offset(tp) is None
    consumer._acked[tp] = [0, 1, 2, 3, 4, 5]
    assert consumer._new_offset(tp) == 6


def test_after_a_seek_records_fetched_before_it_are_dropped(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fetch issued before the seek answers after it (offsets 50, 51): letting
    # those through made Faust count 5..49 as read and drop them when they came.
    intake, changelog = TP(INTAKE, 0), TP("payments-references-changelog", 0)
    consumer, _ = _offline_consumer({intake: 5}, log_start=0, assigned={intake, changelog})
    loop.run_until_complete(consumer.perform_seek())
    fetched = [(intake, 50), (intake, 51), (changelog, 9), (intake, 5), (intake, 6), (intake, 50)]

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for tp, offset in fetched:
            yield tp, SimpleNamespace(offset=offset)

    monkeypatch.setattr(driver.Consumer, "getmany", getmany)

    async def delivered() -> list[tuple[TP, int]]:
        return [(tp, message.offset) async for tp, message in consumer.getmany(timeout=1)]

    assert loop.run_until_complete(delivered()) == [
        (changelog, 9),
        (intake, 5),
        (intake, 6),
        (intake, 50),
    ]


class FakeLog:
    """One intake partition's log and aiokafka's position in it; fetches of ``max_records``."""

    def __init__(self, tp: TP, end: int, max_records: int = 3) -> None:
        self.tp, self.end, self.max_records = tp, end, max_records
        self.position = 0

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        fetched = range(self.position, min(self.position + self.max_records, self.end))
        self.position = fetched.stop
        for offset in fetched:
            yield self.tp, SimpleNamespace(offset=offset, topic=self.tp.topic, tp=self.tp)


async def _fetch(consumer: Consumer, fetches: int = 1) -> list[int]:
    """The offsets that Faust's fetches deliver through the consumer's filter."""
    delivered: list[int] = []
    for _ in range(fetches):
        delivered += [message.offset async for _, message in consumer.getmany(timeout=1)]
    return delivered


def test_records_fetched_while_seeking_after_a_rebalance_do_not_drop_the_tail(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a rebalance the table recovery has resumed the fetch loop when Faust
    # seeks to the committed offsets: a fetch from the offset sought (5..7) could
    # be delivered before getmany's filter was set, which then waited for 5 and
    # dropped 8 and 9. They were the partition's last records: nothing was acked
    # after them, no head gap, no repair, the partition kept its lag for good.
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    log = FakeLog(tp, end=10)
    monkeypatch.setattr(driver.Consumer, "getmany", log.getmany)
    delivered_while_seeking: list[int] = []

    async def seek_to_committed() -> Mapping[TP, int]:
        log.position = 5
        # One fetch is delivered before the seek's answer gets back to the loop.
        delivered_while_seeking.extend(await _fetch(consumer))
        return {tp: 5}

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        log.position = partitions[tp]

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    consumer.seek_wait = seek_wait  # type: ignore[method-assign]
    loop.run_until_complete(consumer.perform_seek())
    assert delivered_while_seeking == [5, 6, 7]

    assert set(loop.run_until_complete(_fetch(consumer, fetches=5))) >= {8, 9}


def test_a_seek_whose_offset_never_comes_does_not_stall_the_partition(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    intake = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({intake: 5}, log_start=0, assigned={intake})
    loop.run_until_complete(consumer.perform_seek())
    monkeypatch.setattr(kafka_transport, "HEAD_GAP_GRACE_SECONDS", 0.0)

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for offset in (50, 51):
            yield intake, SimpleNamespace(offset=offset)

    monkeypatch.setattr(driver.Consumer, "getmany", getmany)

    async def delivered() -> list[int]:
        return [message.offset async for _, message in consumer.getmany(timeout=1)]

    assert loop.run_until_complete(delivered()) == [50, 51]


class FakeClock:
    """kafka_transport's ``time``, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class TrackedMessage:
    """A record an agent took and has not acked (held weakly by Consumer._unacked_messages)."""

    def __init__(self, tp: TP, generation_id: int) -> None:
        self.tp, self.generation_id, self.acked = tp, generation_id, False


def _stalled_partition(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> tuple[Consumer, list[dict[TP, int]], FakeClock]:
    """Committed at 5, the log ending at 10, flow running, nothing acked or in flight."""
    tp = TP(INTAKE, 0)
    consumer, seeks = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    loop.run_until_complete(consumer.perform_seek())
    seeks.clear()
    consumer.app.flow_control.resume()
    consumer.highwater = lambda tp: 10  # type: ignore[method-assign]
    clock = FakeClock()
    monkeypatch.setattr(kafka_transport, "time", clock)
    return consumer, seeks, clock


def _commit_after(
    consumer: Consumer, clock: FakeClock, seconds: float, loop: asyncio.AbstractEventLoop
) -> None:
    """Let ``seconds`` go by, with the fetch loop handing over (empty) fetches, then commit."""
    clock.now += seconds
    consumer._drain_cycles += 2
    loop.run_until_complete(consumer.commit())
    loop.run_until_complete(asyncio.sleep(0))  # the repair's seek


def test_a_partition_whose_last_records_were_dropped_is_fetched_again(
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Records 5..9 were delivered and dropped unprocessed (skipped in an old
    # generation, cleared from the stream's buffer, or filtered): nothing after
    # them was acked, so there was no head gap to repair, and the pipeline stopped
    # with lag and without a word in the logs.
    tp = TP(INTAKE, 0)
    consumer, seeks, clock = _stalled_partition(loop, monkeypatch)

    _commit_after(consumer, clock, 0, loop)
    _commit_after(consumer, clock, kafka_transport.HEAD_GAP_GRACE_SECONDS - 1, loop)
    assert seeks == []
    _commit_after(consumer, clock, 1, loop)

    assert seeks == [{tp: 5}]
    assert consumer._resume_at[tp] == (5, clock.now)
    assert "offsets 5..9 were never processed" in caplog.text


def test_stall_repairs_of_a_partition_back_off(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    tp = TP(INTAKE, 0)
    consumer, seeks, clock = _stalled_partition(loop, monkeypatch)
    grace = kafka_transport.HEAD_GAP_GRACE_SECONDS

    _commit_after(consumer, clock, 0, loop)
    _commit_after(consumer, clock, grace, loop)
    assert len(seeks) == 1
    _commit_after(consumer, clock, 1, loop)  # watched again from here
    _commit_after(consumer, clock, grace, loop)
    assert len(seeks) == 1  # the refetched records may queue behind others: wait longer
    _commit_after(consumer, clock, grace, loop)
    assert len(seeks) == 2

    consumer._committed_offset[tp] = 7  # progress: the grace starts over
    _commit_after(consumer, clock, 1, loop)
    _commit_after(consumer, clock, grace, loop)
    assert seeks[2:] == [{tp: 7}]


@pytest.mark.parametrize(
    "situation",
    [
        "taken by the agent",
        "in the stream's buffer",
        "acked later",
        "caught up",
        "fetch loop held",
        "flow suspended",
    ],
)
def test_a_partition_is_not_taken_for_stalled_while_it_moves(
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    situation: str,
) -> None:
    tp = TP(INTAKE, 0)
    consumer, seeks, clock = _stalled_partition(loop, monkeypatch)
    message = TrackedMessage(tp, consumer.app.consumer_generation_id)
    if situation == "taken by the agent":
        consumer._unacked_messages.add(message)  # type: ignore[arg-type]
    elif situation == "in the stream's buffer":
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queue.put_nowait(SimpleNamespace(message=message))
        consumer.app.topics._tp_index[tp] = [SimpleNamespace(queue=queue)]  # type: ignore[attr-defined]
    elif situation == "acked later":
        consumer._acked[tp] = [8]  # a head gap: _repair_head_gap's business
    elif situation == "caught up":
        consumer.highwater = lambda tp: 5  # type: ignore[method-assign]
    elif situation == "flow suspended":
        consumer.app.flow_control.suspend()

    for _ in range(4):
        clock.now += kafka_transport.HEAD_GAP_GRACE_SECONDS
        if situation != "fetch loop held":  # e.g. waiting for room in a full stream buffer
            consumer._drain_cycles += 2
        loop.run_until_complete(consumer.commit())
        loop.run_until_complete(asyncio.sleep(0))

    assert "nothing after them was" not in caplog.text
    if situation != "acked later":  # there, the head-gap repair seeks (and logs its own warning)
        assert seeks == []


def _drain(consumer: Consumer, fetched: list[int], loop: Any) -> tuple[list[int], list[int]]:
    """Run the fetch loop over one fetch of intake offsets: (handed over directly, raced).

    Faust's race (``wait_first``) is replaced by a fake that records the offset
    and drops the hand-over, as a real race does when flow is suspended.
    """
    tp = TP(INTAKE, 0)
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    direct: list[int] = []
    raced: list[int] = []

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for offset in fetched:
            yield tp, SimpleNamespace(offset=offset, topic=INTAKE, tp=tp)
        fetcher._stopped.set()

    async def deliver(message: Any) -> None:
        direct.append(message.offset)

    async def race(hand_over: Any, suspended: Any) -> None:
        hand_over.close()
        suspended.close()
        raced.append(fetched[len(direct) + len(raced)])

    consumer.getmany = getmany  # type: ignore[method-assign]
    consumer.callback = deliver
    consumer.wait_first = race  # type: ignore[method-assign,assignment]
    loop.run_until_complete(asyncio.wait_for(consumer._drain_messages(fetcher), 5))
    return direct, raced


def test_records_are_handed_over_directly_when_nothing_can_block(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # Faust raced every hand-over against "flow suspended" with four tasks.
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    loop.run_until_complete(consumer.perform_seek())
    consumer.app.flow_control.resume()  # as once partitions are assigned
    consumer.resume_flow()

    direct, raced = _drain(consumer, [5, 6, 7], loop)

    assert (direct, raced) == ([5, 6, 7], [])
    assert consumer._read_offset[tp] == 7


def test_records_of_a_partition_not_sought_yet_are_not_handed_over(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # Between a rebalance and its seek, a kept partition's fetcher delivers records
    # past ones it fetched in the old generation and nobody processed: decided then,
    # a later record of a reference would come before an earlier one.
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: None}, log_start=0, assigned={tp})
    consumer.app.flow_control.resume()  # Faust resumes the flow before it seeks
    consumer.resume_flow()

    assert _drain(consumer, [800, 801], loop) == ([], [])
    assert consumer._read_offset[tp] is None  # so the seek fetches them again

    loop.run_until_complete(consumer.perform_seek())
    consumer.resume_flow()
    direct, _ = _drain(consumer, [0, 1, 2], loop)
    assert direct == [0, 1, 2]


def test_records_behind_the_read_offset_are_dropped(loop: asyncio.AbstractEventLoop) -> None:
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    loop.run_until_complete(consumer.perform_seek())
    consumer.app.flow_control.resume()
    consumer.resume_flow()

    direct, _ = _drain(consumer, [5, 6, 4, 6, 7], loop)

    assert direct == [5, 6, 6, 7]  # as Faust: the read offset itself is delivered again


def test_a_hand_over_that_could_block_is_raced_against_suspended_flow(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # While flow is suspended (a rebalance), the hand-over waits for it to resume:
    # awaited directly, it would stall the fetch loop for the whole rebalance.
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    loop.run_until_complete(consumer.perform_seek())
    consumer.stop_flow()  # a rebalance: flow suspended

    direct, raced = _drain(consumer, [5, 6], loop)

    assert (direct, raced) == ([], [5, 6])
    assert consumer._read_offset[tp] == 6


def test_records_fetched_during_the_seek_wait_for_the_flow_to_resume(
    loop: asyncio.AbstractEventLoop,
) -> None:
    # Faust resumes the flow, seeks, then resumes the flow again, and each resume
    # empties the streams' queues: records handed over during the seek were thrown
    # away but counted as read, and the partition waited for the head-gap repair.
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    consumer.app.flow_control.resume()  # the first resume
    consumer.resume_flow()
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    queue: list[int] = []  # a stream's queue, emptied by each resume of the flow

    async def getmany(timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for offset in (5, 6, 7):
            yield tp, SimpleNamespace(offset=offset, topic=INTAKE, tp=tp)
        fetcher._stopped.set()

    async def deliver(message: Any) -> None:
        queue.append(message.offset)

    async def scenario() -> list[int]:
        seeking = asyncio.ensure_future(consumer.perform_seek())
        await asyncio.sleep(0)  # the seek has begun (it clears the gate first)
        draining = asyncio.ensure_future(consumer._drain_messages(fetcher))
        await seeking
        for _ in range(10):
            await asyncio.sleep(0)  # the fetch loop's turns, before the flow resumes
        held = list(queue)
        queue.clear()  # Faust's second resume of the flow empties the queues...
        consumer.app.flow_control.resume()
        consumer.resume_flow()  # ...then the consumer's flow resumes
        await asyncio.wait_for(draining, 5)
        return held

    consumer.getmany = getmany  # type: ignore[method-assign]
    consumer.callback = deliver
    held = loop.run_until_complete(scenario())

    assert held == []  # nothing was handed over while the seek ran
    assert queue == [5, 6, 7]  # all of it after the flow resumed: none thrown away
    assert consumer._read_offset[tp] == 7


def test_a_record_held_through_a_seek_goes_on_only_if_the_seek_wants_it(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fetch loop holds a record fetched before the seek (offset 50, the old
    # position); the seek then asks for 5. Handed over, 50 would make 5..49 look
    # read already, and the partition would wait for the head-gap repair.
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    consumer.app.flow_control.resume()
    consumer.resume_flow()
    log = FakeLog(tp, end=60)
    log.position = 50
    monkeypatch.setattr(driver.Consumer, "getmany", log.getmany)
    released = asyncio.Event()
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    delivered: list[int] = []

    async def seek_to_committed() -> Mapping[TP, int]:
        await released.wait()
        return {tp: 5}

    async def seek_wait(partitions: Mapping[TP, int]) -> None:
        log.position = partitions[tp]

    async def deliver(message: Any) -> None:
        delivered.append(message.offset)
        if message.offset == 7:
            fetcher._stopped.set()

    async def scenario() -> None:
        seeking = asyncio.ensure_future(consumer.perform_seek())
        await asyncio.sleep(0)
        draining = asyncio.ensure_future(consumer._drain_messages(fetcher))
        for _ in range(5):
            await asyncio.sleep(0)  # 50 is fetched and held
        released.set()
        await seeking
        consumer.app.flow_control.resume()
        consumer.resume_flow()
        await asyncio.wait_for(draining, 5)

    consumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    consumer.seek_wait = seek_wait  # type: ignore[method-assign]
    consumer.callback = deliver
    loop.run_until_complete(scenario())

    assert delivered == [5, 6, 7]


def test_a_seek_whose_flow_never_resumes_holds_the_fetch_loop_for_a_while_only(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setattr(kafka_transport, "SEEK_SETTLED_MAX_SECONDS", 0.3)
    tp = TP(INTAKE, 0)
    consumer, _ = _offline_consumer({tp: 5}, log_start=0, assigned={tp})
    consumer.app.flow_control.resume()
    consumer.resume_flow()
    loop.run_until_complete(consumer.perform_seek())  # and no resume after it (it failed)

    started = loop.time()
    direct, raced = _drain(consumer, [5, 6], loop)

    assert (direct, raced) == ([5, 6], [])
    assert loop.time() - started >= 0.3
    assert "the flow did not resume within 0 s of a seek" in caplog.text


class FakeCoordinator:
    """aiokafka's group coordinator holding an error for the user, as after a failed join."""

    def __init__(self, pending: Exception, *, alive: bool = True) -> None:
        self.pending: Exception | None = pending
        self._coordination_task = SimpleNamespace(done=lambda: not alive)

    def check_errors(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            raise pending


def _aiokafka_consumer(error: Exception, coordinator: FakeCoordinator) -> Any:
    """An aiokafka consumer whose fetch raises ``error`` (the coordinator's abort_waiters)."""

    async def fetched_records(*args: Any, **kwargs: Any) -> Any:
        raise error

    class Subscriptions:
        def fetch_context(self) -> Any:
            return contextlib.nullcontext()

    fetcher = SimpleNamespace(
        fetched_records=fetched_records, _closed=False, _subscriptions=Subscriptions()
    )
    return SimpleNamespace(_fetcher=fetcher, _closed=False, _coordinator=coordinator)


def _offline_thread() -> ConsumerThread:
    """The service consumer's aiokafka thread, never started."""
    thread = create_app(Settings(), store="memory://").consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, ConsumerThread)
    return thread


def test_the_consumer_runs_on_the_workers_loop_and_in_its_thread() -> None:
    # Faust's own runs in a thread with a second loop: the two took turns at the GIL.
    thread = _offline_thread()
    loop = thread.parent_loop  # the app's (mode keeps one per thread)
    assert thread.thread_loop is loop

    async def where() -> tuple[int, asyncio.AbstractEventLoop]:
        return threading.get_ident(), asyncio.get_running_loop()

    assert loop.run_until_complete(thread.call_thread(where)) == (threading.get_ident(), loop)


def test_the_consumer_starts_and_stops_without_a_thread_or_touching_other_tasks() -> None:
    thread = _offline_thread()
    loop = thread.parent_loop
    started: list[bool] = []

    async def on_start() -> None:  # Faust's creates and starts the aiokafka consumer
        started.append(True)

    thread.on_start = on_start  # type: ignore[method-assign]
    threads_before = threading.active_count()

    async def run() -> asyncio.Task[None]:
        other = asyncio.ensure_future(asyncio.sleep(60))  # the worker's other work
        await thread.start()
        assert started == [True]
        assert threading.active_count() == threads_before
        await thread.stop()
        return other

    other = loop.run_until_complete(asyncio.wait_for(run(), 10))
    # mode's ServiceThread cancels every other task of its loop when it stops: here
    # that loop is the worker's, so its tasks must survive.
    assert not other.done()
    other.cancel()
    assert thread._serving is not None
    assert thread._serving.done()


@pytest.mark.parametrize(
    "error", [KafkaError("UnknownError()"), RequestTimedOutError()], ids=["unexpected", "retriable"]
)
def test_a_failed_group_join_is_handed_back_and_the_fetch_goes_on(
    loop: asyncio.AbstractEventLoop, error: KafkaError
) -> None:
    # What a JoinGroup answered UNKNOWN_SERVER_ERROR did after a broker's SIGSTOP:
    # Faust stopped the worker on the fetch's error.
    thread = _offline_thread()
    coordinator = FakeCoordinator(error)
    fetch = thread._fetch_records(_aiokafka_consumer(error, coordinator), set(), timeout=0.1)
    assert loop.run_until_complete(fetch) == {}
    assert coordinator.pending is None  # taken: the coordinator joins again


@pytest.mark.parametrize("alive", [True, False], ids=["fatal error", "coordinator dead"])
def test_other_group_errors_still_stop_the_fetch(
    loop: asyncio.AbstractEventLoop, alive: bool
) -> None:
    thread = _offline_thread()
    error = GroupAuthorizationFailedError() if alive else KafkaError("coordination died")
    consumer = _aiokafka_consumer(error, FakeCoordinator(error, alive=alive))
    with pytest.raises(KafkaError):
        loop.run_until_complete(thread._fetch_records(consumer, set(), timeout=0.1))
