"""The record agent: ``payment.intake`` in batches → Postgres, ``payment.events``, the DLQ.

Faust runs it at-least-once (docs/architecture.md says why not
``exactly_once``). Offsets of a batch are committed only after
:func:`record_batch` returns, so the batch is never acked before its rows are
committed, its events published and its dead letters sent. A record that keeps
failing for a reason nobody foresaw is isolated and dead-lettered as
``unprocessable`` (:mod:`app.recording.failures`): it never holds the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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

#: Pause before handling a batch again when even dead-lettering its record failed.
UNEXPECTED_ERROR_PAUSE_SECONDS = 5.0

#: How often a busy agent logs its progress.
PROGRESS_INTERVAL_SECONDS = 10.0


class Progress:
    """Counts what the agent did and logs it every PROGRESS_INTERVAL_SECONDS while busy."""

    def __init__(self) -> None:
        self._reset(time.monotonic())

    def _reset(self, now: float) -> None:
        self.since = now
        self.records = self.batches = self.created = self.duplicates = 0
        self.busy = 0.0

    def add(self, report: BatchReport, size: int, seconds: float) -> None:
        self.records += size
        self.batches += 1
        self.created += report.count("created")
        self.duplicates += report.count("duplicate")
        self.busy += seconds
        now = time.monotonic()
        elapsed = now - self.since
        if elapsed >= PROGRESS_INTERVAL_SECONDS:
            log.info(
                "record agent: %d records in %.0f s (%.0f/s; %d created, %d duplicates); "
                "%d batches of %.0f on average, %.0f ms each, busy %.0f%%",
                self.records,
                elapsed,
                self.records / elapsed,
                self.created,
                self.duplicates,
                self.batches,
                self.records / self.batches,
                1000 * self.busy / self.batches,
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


async def record_batch(recorder: Recorder, batch: Sequence[Incoming]) -> BatchReport:
    """``batch`` through the failure policy: whole if it can be, else around its bad records."""
    reports = await failures.settle(
        "record agent", batch, recorder.handle, recorder.unprocessable, sleep=recorder.sleep
    )
    return reports[0] if len(reports) == 1 else BatchReport.merged(reports)


@dataclass(frozen=True)
class FaultHooks:
    """Where a test may break the agent (FAULT_POINT, app/fault_points.py); none in production."""

    #: The payment store's class (a test's fails on chosen records).
    store: type[PaymentStore] = PaymentStore
    #: Makes, per agent start, what runs inside the transaction once references are claimed.
    after_claim: Callable[[], Callable[[], None]] | None = None
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
        async for events in take_batches(stream, settings.record_batch_size, within):
            batch = [Incoming(event.key, event.value, event) for event in events]
            started = time.perf_counter()
            while True:
                try:
                    report = await record_batch(recorder, batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Only a failure to dead-letter a record gets here. Escaping would
                    # end the agent and let take_batches ack the batch on its way out:
                    # records would be skipped. Hold the batch.
                    log.exception(
                        "record agent: could not dead-letter a record of a batch of %d; "
                        "retrying in %.0f s. Report this with the traceback",
                        len(batch),
                        UNEXPECTED_ERROR_PAUSE_SECONDS,
                    )
                    await asyncio.sleep(UNEXPECTED_ERROR_PAUSE_SECONDS)
            progress.add(report, len(batch), time.perf_counter() - started)
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

    return app.agent(intake, name="record_payments")(record_payments)
