"""Faust's aiokafka transport, with the offset bookkeeping made safe for payments.

faust-streaming 0.15.3 can commit past a record no agent processed, or stop
committing a partition for good. We reproduced both with a SIGKILL and restart
in the middle of a staging load (tests/integration/test_recording_crashes.py):

1. **Skipped messages are acked.** While flow is suspended (recovery) or for a
   message fetched in an older consumer generation, ``Stream`` skips the message
   and acks it, so the commit can move past it. We refuse those acks.
2. **Refetched messages are dropped.** After "Seek stream partitions to committed
   offsets", the fetch loop may still be delivering a batch fetched before the
   seek; that moves the consumer's read offset forward again, and the refetched
   records behind it are dropped as already read. They are never processed, so
   the partition's commit stops at the first of them (nothing later commits).
3. **One missing offset slips through.** The commit computation treats a head gap
   of exactly one offset as no gap (``min(acked) - committed > 1``).
4. **A jump counts as a gap.** When offsets jump (a fetch issued before a seek
   answers after it), the skipped range is recorded as a "gap" and committed over
   as if it held nothing. On our topics (no compaction, no transactions) every
   offset holds a record, so we never record such gaps.
5. **No commit yet means no check, and no seek.** For a partition whose committed
   offset is 0 or absent, Faust skips the head-gap check and commits the first run
   of acks, wherever it starts; and aiokafka does not seek it, so a partition that
   stays assigned across a rebalance resumes where its fetcher had got to, past
   records fetched in the old generation and never processed. (A second worker
   joining a fresh group lost ~800 records per partition this way.) Nor may such
   a partition commit before the seek: a rebalance makes Faust forget the
   committed offsets of all its partitions, kept ones too, and it resumes the
   flow before it seeks. Records a kept partition's fetcher delivered in that
   window were processed and their run of acks committed, over the records of
   the old generation that nobody processed (two CI runs of the join test in
   tests/integration/test_recording_workers.py lost about 500 of 38,000
   records; the test run in a loop lost 560 on its seventh run). Until the seek
   has set where a partition starts, nothing of it commits, and none of its
   records is handed over: processed then, a record would also be decided
   before earlier ones of its reference that were never processed.
6. **A dropped tail is never fetched again.** Records a partition's fetch
   delivered and nobody processed (skipped, cleared from a stream's buffer, or
   dropped by the filters below) are noticed only when a later offset of the
   partition is acked. When they were the partition's last records, nothing
   later comes, the commit stays where it is and the partition keeps its lag for
   good, without a word in the logs (three workers, rebalances near the end of a
   load: the recording stopped for minutes).

The fix for the first five is the same invariant: commit only a run of acked
offsets that starts at the committed offset, and start a partition that has none
at the beginning of its log. After every seek, records of that partition are let
through only from the offset sought: whatever arrives first from a fetch issued
before the seek is dropped before Faust can count it as read (the cause of 2).
That filter is set before the seek it waits for (one cause of 6 was a filter
set after the fetch loop had already taken the offset sought).
7. **A commit below the log start is repaired for ever.** When the topic's
   retention deleted records a group never processed, the committed offset is
   below the log start: a seek there answers "out of range", aiokafka resets to
   the log start, the head looks missing, the repair seeks back, and the
   partition never commits again. The consumer now resumes at the log start
   with an error naming the lost range and counts it
   (``payments_intake_records_lost_total``).
8. **Records handed over during the seek are thrown away.** After a rebalance
   Faust resumes the flow, then seeks the stream partitions to their committed
   offsets, then resumes the flow again; each resume empties the streams'
   queues. Records the fetch loop handed over while the seek ran were emptied
   out by the second resume, but counted as read: their refetch was dropped as
   already read, and the partition waited HEAD_GAP_GRACE_SECONDS for the
   head-gap repair (a run of 50,000 staged rows with two workers took 2-3 times
   as long, one run in two). The fetch loop now holds its next record from the
   start of a seek until the flow is resumed after it.

When the head of a partition still stays missing for HEAD_GAP_GRACE_SECONDS,
seek back to the committed offset so the records are fetched and processed
again (at-least-once; the record agent's dedup absorbs the repeats); likewise
when a partition with records past its committed offset has nothing acked,
nothing in flight and no progress for as long (6). Every repair is logged as a
warning.

Its consumer runs on the worker's own event loop, not in a thread of its own, and
keeps a failed group join from stopping the worker (:class:`ConsumerThread`).

Upstream: fix 1 undoes the acks of the generation check added for faust-streaming
#221 (prefetched records after a rebalance), fix 2 is the rest of #221, fixes 3 and 4
are #606 (a one-offset head gap committed over), 6 is what #596 describes (gaps in
the acked offsets that block committing for good) and 7 is #318 (no commit after
an out-of-range reset). A repair fetches records again, so a record can be
processed twice, as in #502: the record agent's dedup makes that harmless. The
private names these fixes touch are checked at start (app/kafka/faust_patches.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from mode.utils.futures import maybe_async

from app.instruments import INTAKE_RECORDS_LOST

log = logging.getLogger(__name__)


#: How long the head of a partition may stay unacked before we fetch it again.
#: Longer than a batch normally takes, so a slow batch is not mistaken for a loss.
#: Doubled after each repair of the same partition (the refetched records queue
#: behind what is already buffered), up to HEAD_GAP_GRACE_MAX_SECONDS.
HEAD_GAP_GRACE_SECONDS = 15.0
HEAD_GAP_GRACE_MAX_SECONDS = 120.0

#: How long a repair waits for the partition's log start before seeking anyway.
LOG_START_TIMEOUT_SECONDS = 10.0

#: How often a fetch loop held during a seek checks that the flow has not stopped (fix 8).
SEEK_SETTLED_POLL_SECONDS = 0.1
#: The longest a fetch loop is held for a seek whose flow does not resume (it failed).
SEEK_SETTLED_MAX_SECONDS = 30.0

#: The fetch loop gives the event loop a turn after this many records (as Faust's does).
YIELD_EVERY = 100


class Consumer(driver.Consumer):
    """The aiokafka driver's consumer with the fixes described above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_gap_since: dict[Any, float] = {}
        self._head_gap_grace: dict[Any, float] = {}
        self._repairs: set[asyncio.Future[None]] = set()
        #: partition -> (the offset that must come next after a seek, since when); see getmany.
        self._resume_at: dict[Any, tuple[int, float]] = {}
        #: partition -> ((committed, read offset), drain cycle, since when) while it
        #: has records past its commit and nothing acked; see _repair_stalled_partitions.
        self._stalls: dict[Any, tuple[tuple[int, int | None], int, float]] = {}
        #: partition -> (committed offset, grace) after a repair of its stall.
        self._stall_grace: dict[Any, tuple[int, float]] = {}
        #: Fetches the fetch loop has handed over completely (see _drain_messages).
        self._drain_cycles = 0
        #: Clear from the start of a seek until Faust resumes the flow after it (fix 8).
        self._seek_settled = asyncio.Event()
        self._seek_settled.set()

    def ack(self, message: Any) -> bool:
        app = self.app
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            return False  # skipped by the stream (fix 1); it will be fetched again
        return bool(super().ack(message))

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def resume_flow(self) -> None:
        super().resume_flow()
        self._seek_settled.set()

    async def perform_seek(self) -> None:
        self._seek_settled.clear()  # until the flow resumes after this seek (fix 8)
        await super().perform_seek()
        # aiokafka seeks only partitions with a committed offset above 0, and Faust
        # keeps "committed" as None for the others. A partition that stayed assigned
        # across a rebalance then resumes wherever the fetcher had got to, past
        # records it fetched in the old generation and never processed, and Faust
        # commits the first run of acks from there (fix 5: a second worker joining a
        # fresh group lost ~800 records per partition). Without a commit, processing
        # starts at the beginning of the log: seek there and count it as committed.
        acking = [tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic)]
        starts = await self.earliest_offsets(*acking) if acking else {}
        unstarted = {
            tp: start for tp, start in starts.items() if not self._committed_offset.get(tp)
        }
        if unstarted:
            self._committed_offset.update(unstarted)
            log.info(
                "no committed offsets yet; starting from the log start: %s", _describe(unstarted)
            )
        for tp, start in starts.items():
            committed = self._committed_offset.get(tp)
            if committed is not None and committed < start:
                self._resume_at_log_start(tp, committed, start)  # fix 7
        # Table changelogs are read through this consumer too, from their own
        # positions: only the acked topics resume at their committed offsets.
        resume = {
            tp: offset for tp in acking if (offset := self._committed_offset.get(tp)) is not None
        }
        now = time.monotonic()
        self._resume_at.clear()
        self._resume_at.update((tp, (offset, now)) for tp, offset in resume.items())
        # Seek (again) now that getmany waits for these offsets. After a rebalance
        # the recovery has already resumed the fetch loop when Faust seeks here, so
        # records fetched from the committed offset could be delivered before the
        # filter was set; getmany then waited for an offset already gone by and
        # dropped the rest of the partition for HEAD_GAP_GRACE_SECONDS, and for
        # good when that was its tail (nothing acked after it, so no head gap).
        if resume:
            log.info("resuming at the committed offsets: %s", _describe(resume))
            await self.seek_wait(resume)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:  # noqa: ASYNC109  # Faust's signature
        """Faust's fetch loop, minus records fetched before the latest seek of their partition.

        Such a record would move Faust's read offset past the records the seek
        asked for, and Faust would then drop those as already read (fix 2). If
        the offset sought does not come within HEAD_GAP_GRACE_SECONDS, records
        flow again as they come (the head-gap repair then seeks once more):
        waiting for ever would stall the partition.
        """
        resume_at = self._resume_at
        async for tp, message in super().getmany(timeout):
            if resume_at and tp in resume_at:
                wanted, since = resume_at[tp]
                if message.offset != wanted:
                    if time.monotonic() - since < HEAD_GAP_GRACE_SECONDS:
                        continue  # from before the seek; the records sought follow
                    log.warning(
                        "%s: offset %d did not come after seeking to it; taking %d",
                        tp,
                        wanted,
                        message.offset,
                    )
                del resume_at[tp]
            yield tp, message

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's fetch loop, handing each record to the streams without a task when it can.

        Faust races the hand-over of every record against "flow suspended"
        (``wait_first``: four tasks and an ``asyncio.wait`` per record, a tenth of
        a worker's CPU in bench/staging) because the hand-over blocks while flow
        is suspended, the producer buffer is full or a stream's queue is full.
        When none of those holds, the hand-over cannot block and is awaited
        directly; otherwise it is raced as Faust does. The rest is Faust's loop:
        records at or past the read offset are delivered, earlier ones are
        dropped as already read, and ``commit_every`` acks trigger a commit.
        """
        deliver = self.callback
        app = self.app
        read_offset = self._read_offset
        committed = self._committed_offset
        acks_enabled_for = app.topics.acks_enabled_for
        should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        seek_settled = self._seek_settled.is_set
        since_yield = 0
        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)  # a getmany that returns at once must not hog the loop
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        since_yield = 0
                        await asyncio.sleep(0)
                    if not seek_settled():
                        await self._until_seek_settled()  # fix 8
                        if not self._sought(tp, message.offset):
                            continue  # fetched before the seek; the seek fetches it again
                    if committed.get(tp) is None and acks_enabled_for(message.topic):
                        continue  # not sought since the rebalance; its seek fetches it (fix 5)
                    offset = message.offset
                    last_read = read_offset[tp]
                    if last_read is not None and offset < last_read:
                        continue  # already read (a seek went back past it)
                    if last_read and offset - last_read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last_read + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if self._hand_over_cannot_block(tp):
                        await deliver(message)
                    else:
                        await self.wait_first(deliver(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                self._drain_cycles += 1
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            log.info("Broker stopped consumer, shutting down...")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
            log.info("Consumer shutting down for user cancel.")
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _until_seek_settled(self) -> None:
        """Wait for the flow to resume after a seek (fix 8), or to stop, or the consumer to.

        Once the flow stops (another rebalance), the hand-over races "flow suspended"
        as usual and is given up; the next seek fetches the record again. A seek whose
        flow never resumes (the seek failed) is waited for SEEK_SETTLED_MAX_SECONDS,
        then records flow again as Faust would hand them over.
        """
        deadline = time.monotonic() + SEEK_SETTLED_MAX_SECONDS
        while not self._seek_settled.is_set() and self.flow_active and not self.should_stop:
            if time.monotonic() > deadline:
                log.warning(
                    "the flow did not resume within %.0f s of a seek; handing records over",
                    SEEK_SETTLED_MAX_SECONDS,
                )
                self._seek_settled.set()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._seek_settled.wait(), SEEK_SETTLED_POLL_SECONDS)

    def _sought(self, tp: Any, offset: int) -> bool:
        """Whether a record held through a seek (fix 8) passes that seek's filter (see getmany)."""
        wanted = self._resume_at.get(tp)
        if wanted is None:
            return True
        if offset != wanted[0]:
            return False
        del self._resume_at[tp]
        return True

    def _hand_over_cannot_block(self, tp: Any) -> bool:
        """True when Faust's hand-over of a record of ``tp`` to its streams returns at once."""
        app = self.app
        if not (self.flow_active and app.flow_control.is_active()):
            return False
        buffer = app.producer.buffer
        if buffer.size > buffer.max_messages:
            return False
        # The streams this partition feeds (the conductor keeps no public index of them).
        channels = app.topics._tp_index.get(tp, ())  # type: ignore[attr-defined]
        return not any(channel.queue.full() for channel in channels)

    async def _add_gap(self, tp: Any, offset_from: int, offset_to: int) -> None:
        # Faust reads a jump in offsets as "no records there" (compaction,
        # transaction markers) and lets the commit pass over it. Our topics have
        # neither: a jump means a fetch from before a seek, i.e. records not
        # delivered (fix 4). Leave the range unacked; the head-gap repair below
        # fetches it again if nothing else does.
        log.info(
            "%s: offsets %d..%d skipped by the fetcher; not committing past them",
            tp,
            offset_from,
            offset_to - 1,
        )

    def _new_offset(self, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if committed is None:
            return None  # not sought yet: where the partition starts is unknown (fix 5)
        if acked and min(acked) > committed:
            self._repair_head_gap(tp, committed, min(acked))  # fixes 2 and 3
            return None
        self._head_gap_since.pop(tp, None)
        self._head_gap_grace.pop(tp, None)
        offset: int | None = super()._new_offset(tp)
        return offset

    def _repair_head_gap(self, tp: Any, committed: int, first_acked: int) -> None:
        now = time.monotonic()
        since = self._head_gap_since.setdefault(tp, now)
        grace = self._head_gap_grace.get(tp, HEAD_GAP_GRACE_SECONDS)
        if now - since < grace:
            return
        self._head_gap_since.pop(tp, None)
        self._head_gap_grace[tp] = min(2 * grace, HEAD_GAP_GRACE_MAX_SECONDS)
        log.warning(
            "%s: offsets %d..%d were never processed although later ones were; "
            "seeking back to %d to fetch them again (repeats are deduplicated)",
            tp,
            committed,
            first_acked - 1,
            committed,
        )
        self._seek_back(tp, committed, now)

    def _seek_back(self, tp: Any, offset: int, now: float) -> None:
        """Fetch ``tp`` again from ``offset``; getmany lets it through from there only."""
        self._resume_at[tp] = (offset, now)
        repair = asyncio.ensure_future(self._refetch(tp, offset))
        self._repairs.add(repair)
        repair.add_done_callback(self._repair_done)

    async def _refetch(self, tp: Any, offset: int) -> None:
        # Seeking below the log start would answer "out of range", aiokafka would
        # reset to the log start, the head would look missing again and the repair
        # would seek back for ever: the partition never committed again (fix 7).
        # The look-up is bounded: a repair must not wait on it.
        try:
            starts = await asyncio.wait_for(self.earliest_offsets(tp), LOG_START_TIMEOUT_SECONDS)
        except (TimeoutError, KafkaError) as exc:
            log.warning("%s: log start unknown (%r); seeking to %d", tp, exc, offset)
            starts = {}
        start = starts.get(tp)
        if start is not None and offset < start:
            self._resume_at_log_start(tp, offset, start)
            offset = start
            self._resume_at[tp] = (offset, time.monotonic())
        # Through the consumer thread's interface (on the worker's loop), as Faust seeks.
        await self.seek_wait({tp: offset})

    def _resume_at_log_start(self, tp: Any, committed: int, start: int) -> None:
        """Records ``committed``..``start - 1`` are gone from Kafka: say so, count them, go on."""
        INTAKE_RECORDS_LOST.labels(tp.topic).inc(start - committed)
        log.error(
            "%s: the committed offset %d is below the log start %d: records %d..%d were "
            "deleted by the topic's retention before they were processed and cannot be read "
            "from Kafka any more. Resuming at %d. Their payments are not recorded unless they "
            "are sent again: find them at their source (staging rows still unprocessed, the "
            "senders' webhooks), then run `python -m app reconcile`; raise the topic's "
            "retention.ms above the longest backlog you expect.",
            tp,
            committed,
            start,
            committed,
            start - 1,
            start,
        )
        self._committed_offset[tp] = start
        self._head_gap_since.pop(tp, None)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        # Faust commits every broker_commit_interval: the stall check rides along (fix 6).
        self._repair_stalled_partitions()
        return bool(await super().commit(topics, start_new_transaction=start_new_transaction))

    def _repair_stalled_partitions(self) -> None:
        """Seek back a partition whose unprocessed records nothing will ever fetch again (fix 6).

        The head-gap repair needs a later offset of the partition acked. A
        partition is stalled when it has records past its committed offset (the
        highwater is above it) but for HEAD_GAP_GRACE_SECONDS (doubled after each
        repair at the same committed offset) nothing of it was acked, its commit
        and read offset stayed put, the fetch loop handed over whole fetches (it
        is not held up by a full buffer), and at the end none of its records is
        in a stream's buffer or in an agent's hands. Not while rebalancing or
        with flow suspended: the seek after the rebalance does it then.
        """
        app = self.app
        stalls = self._stalls
        if app.rebalancing or not (self.flow_active and app.flow_control.is_active()):
            stalls.clear()
            return
        now = time.monotonic()
        cycles = self._drain_cycles
        watched = set()
        stalled: list[tuple[Any, int, int, float]] = []
        for tp in self.assignment():
            if not app.topics.acks_enabled_for(tp.topic) or tp in self._paused_partitions:
                continue
            committed = self._committed_offset.get(tp)
            highwater = self._known_highwater(tp)
            if committed is None or highwater is None or highwater <= committed:
                continue  # nothing to process
            if self._acked.get(tp):
                continue  # progressing, or a head gap (_repair_head_gap)
            watched.add(tp)
            state = (committed, self._read_offset.get(tp))
            stall = stalls.get(tp)
            if stall is None or stall[0] != state:
                stalls[tp] = (state, cycles, now)
                continue
            _, since_cycles, since = stall
            grace_at, grace = self._stall_grace.get(tp, (committed, HEAD_GAP_GRACE_SECONDS))
            if grace_at != committed:
                grace = HEAD_GAP_GRACE_SECONDS  # it progressed since the last repair
            if now - since >= grace and cycles >= since_cycles + 2:
                stalled.append((tp, committed, highwater, grace))
        for tp in stalls.keys() - watched:
            del stalls[tp]
        if not stalled:
            return
        in_flight = self._partitions_in_flight()
        for tp, committed, highwater, grace in stalled:
            del stalls[tp]
            if tp in in_flight:
                continue  # an agent has it: watch again from now
            self._stall_grace[tp] = (committed, min(2 * grace, HEAD_GAP_GRACE_MAX_SECONDS))
            log.warning(
                "%s: offsets %d..%d were never processed and nothing after them was "
                "(no progress for %.0f s); seeking back to %d to fetch them again "
                "(repeats are deduplicated)",
                tp,
                committed,
                highwater - 1,
                grace,
                committed,
            )
            self._seek_back(tp, committed, now)

    def _known_highwater(self, tp: Any) -> int | None:
        """The end of ``tp``'s log as of the last fetch, or None if not known yet."""
        try:
            highwater = self.highwater(tp)
        except (ConsumerNotStarted, AssertionError):  # aiokafka asserts that tp is assigned
            return None
        return highwater if isinstance(highwater, int) else None

    def _partitions_in_flight(self) -> set[Any]:
        """Partitions with a record in a stream's buffer or taken and not yet acked."""
        generation = self.app.consumer_generation_id
        busy = {
            message.tp
            for message in list(self._unacked_messages)
            if not message.acked and message.generation_id == generation
        }
        index = self.app.topics._tp_index  # type: ignore[attr-defined]  # see _hand_over_cannot_block
        channels = {id(channel): channel for chans in index.values() for channel in chans}
        for channel in channels.values():
            for event in list(getattr(channel.queue, "_queue", ())):
                message = getattr(event, "message", None)
                if message is not None:
                    busy.add(message.tp)
        return busy

    def _repair_done(self, repair: asyncio.Future[None]) -> None:
        self._repairs.discard(repair)
        if not repair.cancelled() and repair.exception() is not None:
            log.error("seeking back to refetch unprocessed records failed: %r", repair.exception())


def _describe(offsets: Any) -> str:
    return ", ".join(
        f"{tp.topic}[{tp.partition}]@{offset}" for tp, offset in sorted(offsets.items())
    )


class ConsumerThread(driver.AIOKafkaConsumerThread):
    """The aiokafka consumer, on the worker's own event loop, letting a failed group join retry.

    **No thread.** Faust runs the consumer in a thread with an event loop of its
    own and passes every call (each fetch, commit, seek) through a queue to it and
    its answer back with a thread-safe callback. On this service's two shared cores
    that cost more than it bought: the two threads took turns at the GIL on every
    socket write, and each fetch woke both loops (bench/README.md, "The consumer on
    the worker's loop"). The producer already runs on the worker's loop (Faust's
    default). The consumer now does too: the service's ``_serve`` runs as a task of
    that loop, and a call to "the thread" is a plain await. Nothing on the loop
    blocks for long (the staging check runs in its helper process, Postgres and
    Redis are awaited), so heartbeats keep their interval.

    **A failed group join is retried.**
    aiokafka hands a group error it cannot handle (an unexpected JoinGroup or
    SyncGroup answer, an authorization failure) to the user: it is raised once in
    the fetch, and the coordinator then waits until ``check_errors`` takes it before
    it tries again. Faust fetches without ``check_errors`` and stops the worker on
    any fetch error. The broker answered JoinGroup with UNKNOWN_SERVER_ERROR while
    it reloaded the group after a 40 s SIGSTOP, and a worker died of it. Such an
    error, or a retriable one, is now taken and logged, and the group is joined again.
    """

    _serving: asyncio.Future[None] | None = None

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)

    async def start(self) -> None:
        """mode's ``ServiceThread.start``, with ``_serve`` a task of this loop, not a thread."""
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        self._serving = asyncio.ensure_future(self._serve())
        try:
            await self._thread_running  # set by _serve once started, or its start's error
        finally:
            self._thread_running = None

    async def on_thread_started(self) -> None:
        pass  # no method queue: call_thread awaits the call itself

    async def call_thread(self, fun: Any, *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))  # some are plain functions

    async def _gather_remaining_tasks(self) -> None:
        pass  # mode cancels every other task of the thread's loop here: this loop is the worker's

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,  # noqa: ASYNC109  # Faust's signature
        max_records: int | None = None,
    ) -> Any:
        try:
            return await super()._fetch_records(
                consumer, active_partitions, timeout=timeout, max_records=max_records
            )
        except KafkaError as exc:
            coordinator = consumer._coordinator
            if coordinator._coordination_task.done() or not _rejoinable(exc):
                raise
            log.warning("Kafka consumer group: %r; joining the group again", exc)
            with contextlib.suppress(KafkaError):
                coordinator.check_errors()  # takes the error: the coordinator goes on
            return {}


def _rejoinable(exc: KafkaError) -> bool:
    """Retriable, or aiokafka's plain KafkaError for an unexpected group answer."""
    return type(exc) is KafkaError or bool(exc.retriable)


class Transport(driver.Transport):
    Consumer = Consumer
