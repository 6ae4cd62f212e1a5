"""The record agent: ``payment.intake`` in batches → Postgres, ``payment.events``, the DLQ.

Faust runs it at-least-once (DESIGN.md says why not ``exactly_once``). Offsets
of a batch are committed only after :meth:`Recorder.handle` returns, so the
batch is never acked before its rows are committed and its events published.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app import audit_trail
from app.metrics import DEAD_LETTERS, DECISIONS, REFERENCE_ANSWERS
from app.payment_store import PaymentStore
from app.recorder import BatchReport, Incoming, Recorder
from app.topics import INTAKE, INTAKE_PARTITIONS

if TYPE_CHECKING:
    from app.service import PaymentService

log = logging.getLogger(__name__)

#: Pause before handling a batch again after an error nobody expected.
UNEXPECTED_ERROR_PAUSE_SECONDS = 5.0

#: How often a busy agent logs its progress.
PROGRESS_INTERVAL_SECONDS = 10.0

#: Exit code of a worker stopped by FAULT_POINT.
FAULT_EXIT_CODE = 70


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
    if report.table_hits:
        REFERENCE_ANSWERS.labels("table").inc(report.table_hits)
    if report.postgres_answers:
        REFERENCE_ANSWERS.labels("postgres").inc(report.postgres_answers)


def _die() -> None:
    """FAULT_POINT=after_commit: vanish like a SIGKILL, with nothing flushed or published."""
    sys.stderr.write("FAULT_POINT after_commit: exiting after the Postgres commit\n")
    sys.stderr.flush()
    os._exit(FAULT_EXIT_CODE)


def _freeze_once() -> Callable[[], None]:
    """FAULT_POINT=freeze_in_transaction: stop the whole process (SIGSTOP) once, mid-transaction.

    The test sends SIGCONT: the worker wakes as a zombie whose session and
    group membership may have expired meanwhile.
    """
    frozen = False

    def freeze() -> None:
        nonlocal frozen
        if not frozen:
            frozen = True
            log.warning("FAULT_POINT freeze_in_transaction: stopping with claims uncommitted")
            os.kill(os.getpid(), signal.SIGSTOP)

    return freeze


def register(app: PaymentService) -> Any:
    """Add the intake topic and the agent to ``app``; returns the agent."""
    settings = app.settings
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
            PaymentStore(
                app.database.pool,
                settings.kafka_topic,
                app.date_window.max_future,
                after_claim=(
                    _freeze_once() if settings.fault_point == "freeze_in_transaction" else None
                ),
                outbox_lease_seconds=settings.outbox_relay_min_age_seconds,
            ),
            app.references,
            app.publisher,
            events_topic=settings.kafka_topic,
            window=app.date_window,
            crash_after_commit=_die if settings.fault_point == "after_commit" else None,
            announce=lambda report: app.decisions.post(report.decisions, report.committed),
        )
        within = settings.record_batch_window_ms / 1000
        audit_log = settings.audit_log
        progress = Progress()
        async for events in stream.take_events(settings.record_batch_size, within=within):
            batch = [Incoming(event.key, event.value, event) for event in events]
            started = time.perf_counter()
            while True:
                try:
                    report = await recorder.handle(batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Escaping here would end the agent and let take_events ack the
                    # batch on its way out: records would be skipped. Hold the batch.
                    log.exception(
                        "record agent: batch of %d failed unexpectedly; retrying in %.0f s",
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
