"""The record agent: ``payment.intake`` in batches → Postgres, ``payment.events``, the DLQ.

Faust runs it at-least-once (docs/architecture.md says why not
``exactly_once``). Offsets of a batch are committed only after
:func:`record_batch` returns, so the batch is never acked before its rows are
committed, its events published and its dead letters sent. Two batches overlap
(:func:`overlapped`): once a batch is committed in Postgres and its decisions
announced, the next one is decoded and committed while the first one's events,
table entries and outbox deletion finish; batches are acked in order. A record that keeps
failing for a reason nobody foresaw is isolated and dead-lettered as
``unprocessable`` (:mod:`app.recording.failures`): it never holds the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import faust

from app.instruments import CACHE_REQUESTS, DEAD_LETTERS, DECISIONS, REFERENCE_ANSWERS
from app.kafka.faust_patches import take_batches
from app.kafka.publisher import Publisher
from app.kafka.topics import INTAKE, INTAKE_PARTITIONS
from app.models import DateWindow
from app.recording import audit_trail, failures
from app.recording.decisions import DecisionBoard
from app.recording.payment_store import PaymentStore
from app.recording.recorder import BatchReport, Incoming, Recorder
from app.recording.reference_cache import MemoryCache
from app.settings import Settings
from app.storage.database import Database
from tables.references import References

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Pause before handling a batch again when even dead-lettering its record failed.
UNEXPECTED_ERROR_PAUSE_SECONDS = 5.0

#: How often a busy agent logs its progress.
PROGRESS_INTERVAL_SECONDS = 10.0


class Progress:
    """Counts what the agent did and logs it every PROGRESS_INTERVAL_SECONDS while busy."""

    def __init__(self) -> None:
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since = self._last_end = now
        self.records = self.batches = self.created = self.duplicates = 0
        self.busy = 0.0

    def add(self, report: BatchReport, size: int, started: float) -> None:
        """A batch handled from ``started`` (time.monotonic()) until now."""
        now = time.monotonic()
        self.records += size
        self.batches += 1
        self.created += report.count("created")
        self.duplicates += report.count("duplicate")
        # Busy: the time at least one batch was in hand (two overlap; batches end in order).
        self.busy += now - max(started, self.since, self._last_end)
        self._last_end = now
        elapsed = now - self.since
        if elapsed >= PROGRESS_INTERVAL_SECONDS:
            log.info(
                "record agent: %d records in %.0f s (%.0f/s; %d created, %d duplicates); "
                "%d batches of %.0f on average, busy %.0f%%",
                self.records,
                elapsed,
                self.records / elapsed,
                self.created,
                self.duplicates,
                self.batches,
                self.records / self.batches,
                100 * self.busy / elapsed,
            )
            self._reset(now)


def count(report: BatchReport) -> None:
    """The batch's decisions, dead letters and answering layers, as metrics."""
    for (source, outcome), n in Counter(
        (decision.source, decision.outcome) for decision in report.decisions
    ).items():
        DECISIONS.labels(source, outcome).inc(n)
    for reason, n in Counter(letter.reason for letter in report.dead_letters).items():
        DEAD_LETTERS.labels(reason).inc(n)
    if report.memory_hits:
        REFERENCE_ANSWERS.labels("memory").inc(report.memory_hits)
    if report.table_hits:
        REFERENCE_ANSWERS.labels("table").inc(report.table_hits)
    if report.postgres_answers:
        REFERENCE_ANSWERS.labels("postgres").inc(report.postgres_answers)
    for layer, result, n in (
        ("memory", "hit", report.memory_hits),
        ("memory", "miss", report.memory_misses),
        ("table", "hit", report.table_hits),
        ("table", "miss", report.table_misses),
        ("database", "hit", report.postgres_answers),
        ("database", "miss", report.postgres_misses),
    ):
        if n:
            CACHE_REQUESTS.labels(layer, result).inc(n)


async def record_batch(
    recorder: Recorder, batch: Sequence[Incoming], committed: Callable[[], None] | None = None
) -> BatchReport:
    """``batch`` through the failure policy: whole if it can be, else around its bad records.

    ``committed()`` when the batch (or, split, a part of it) is committed and decided.
    """

    async def handle(part: Sequence[Incoming]) -> BatchReport:
        return await recorder.handle(part, committed)

    reports = await failures.settle(
        "record agent", batch, handle, recorder.unprocessable, sleep=recorder.sleep
    )
    return reports[0] if len(reports) == 1 else BatchReport.merged(reports)


async def overlapped(
    batches: AsyncIterable[T],
    handle: Callable[[T, Callable[[], None]], Awaitable[None]],
    done: Callable[[T], Awaitable[None]],
) -> None:
    """``handle(batch, committed)`` each batch, the next one starting at its ``committed()``.

    A batch's tail (its events, table entries, outbox) then runs beside the next
    batch's decoding and Postgres transaction: at most two batches are in hand,
    and the next is taken only when the one before them has ended. ``done(batch)``
    runs after its ``handle`` returned and after the batch before it is done: acks
    stay in order. Nothing more is done for a batch whose handling failed or that
    was cancelled, nor for any batch after it (they are delivered again).
    """
    before: asyncio.Task[None] | None = None
    in_hand: set[asyncio.Task[None]] = set()

    async def run(
        batch: T, committed: Callable[[], None], previous: asyncio.Task[None] | None
    ) -> None:
        await handle(batch, committed)
        if previous is not None:
            await previous  # raises if it failed: this batch is not acked either
        await done(batch)

    try:
        async for batch in batches:
            turn = asyncio.Event()
            task = asyncio.create_task(run(batch, turn.set, before))
            in_hand.add(task)
            task.add_done_callback(in_hand.discard)
            committed = asyncio.create_task(turn.wait())
            try:
                await asyncio.wait((task, committed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                committed.cancel()
            if before is not None:
                await before  # at most two in hand
            before = task
        if before is not None:
            await before
    finally:
        for task in in_hand:
            task.cancel()
        await asyncio.gather(*in_hand, return_exceptions=True)


@dataclass(frozen=True)
class FaultHooks:
    """Where a test may break the agent (FAULT_POINT, app/fault_points.py); none in production."""

    #: The payment store's class (a test's fails on chosen records).
    store: type[PaymentStore] = PaymentStore
    #: Makes, per agent start, what the transaction awaits (with its connection) once
    #: references are claimed.
    after_claim: Callable[[], Callable[[asyncpg.Connection], Awaitable[None]]] | None = None
    #: Runs after the Postgres commit, before the events are published.
    crash_after_commit: Callable[[], None] | None = None


def register(
    app: faust.App,
    *,
    settings: Settings,
    database: Database,
    references: References,
    publisher: Publisher,
    decisions: DecisionBoard,
    window: DateWindow,
    memory: MemoryCache | None = None,
    faults: FaultHooks | None = None,
) -> Any:
    """Add the intake topic and the agent to ``app``; returns the agent."""
    faults = faults or FaultHooks()
    intake = app.topic(
        INTAKE,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=INTAKE_PARTITIONS,
    )

    async def record_payments(stream: Any) -> None:
        recorder = Recorder(
            faults.store(
                database.pool,
                settings.kafka_topic,
                window.max_future,
                after_claim=faults.after_claim() if faults.after_claim else None,
                outbox_lease_seconds=settings.outbox_relay_min_age_seconds,
            ),
            references,
            publisher,
            events_topic=settings.kafka_topic,
            window=window,
            crash_after_commit=faults.crash_after_commit,
            announce=lambda report: decisions.post(
                report.decisions, report.committed, report.dead_letters
            ),
            memory=memory,
        )
        within = settings.record_batch_window_ms / 1000
        audit_log = settings.audit_log
        progress = Progress()

        async def handle(events: list[Any], committed: Callable[[], None]) -> None:
            batch = [Incoming(event.key, event.value, event) for event in events]
            started = time.monotonic()
            while True:
                try:
                    report = await record_batch(recorder, batch, committed)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Only a failure to dead-letter a record gets here. Escaping would
                    # end the agent with the batch unacked, and the next batches with
                    # it. Hold the batch.
                    log.exception(
                        "record agent: could not dead-letter a record of a batch of %d; "
                        "retrying in %.0f s. Report this with the traceback",
                        len(batch),
                        UNEXPECTED_ERROR_PAUSE_SECONDS,
                    )
                    await asyncio.sleep(UNEXPECTED_ERROR_PAUSE_SECONDS)
            progress.add(report, len(batch), started)
            count(report)
            if audit_log:
                audit_trail.decisions(report.decisions, report.dead_letters)
            if report.dead_letters:
                log.info(
                    "record agent: %d records, %d created, %d duplicates, %d conflicts, %d to DLQ",
                    len(batch),
                    report.count("created"),
                    report.count("duplicate"),
                    report.count("conflict"),
                    len(report.dead_letters),
                )

        async def ack(events: list[Any]) -> None:
            for event in events:
                await stream.ack(event)

        await overlapped(take_batches(stream, settings.record_batch_size, within), handle, ack)

    return app.agent(intake, name="record_payments")(record_payments)
