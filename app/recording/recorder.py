"""Deciding a batch of intake records: created, duplicate or conflict, and dead letters.

The order within a batch is the invariant-keeping order of docs/architecture.md:

1. decode and check each record (bad ones become dead letters);
2. the process's memory cache (ENABLE_MEMORY_CACHE), then the ``references`` table,
   answer the references they know (a hit means committed);
3. the rest go to Postgres in ONE transaction (claim references, payments rows,
   an outbox row with their events), which also answers the references that
   were already taken;
4. after the commit: publish the events and the dead letters, write the table
   and announce the decisions (``announce``: the webhook views waiting for them;
   all three need only the commit), wait for the acks, then delete the outbox
   rows (the outbox holds only unsent events).

Steps 1 to 3 take the recorder's turn: one batch at a time, in the order the
batches came. Step 4 (the *tail*) does not: ``committed`` is called when step 3 is
done, and the record agent then starts the next batch's steps 1 to 3 while this
one's events are acknowledged (agents/record_payments.py). Until
:meth:`Recorder.handle` returns, no offset of the batch is committed, so a crash
anywhere replays the batch and Postgres' primary key absorbs the replay.
Infrastructure errors (Postgres or Kafka away) are retried here, forever, with
backoff: the batch waits rather than skipping a record. Anything else is raised
to the agent, which isolates the record at fault (:mod:`app.recording.failures`) and
dead-letters it with :meth:`Recorder.unprocessable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from app.exceptions import RecordsRefused, UndecodableRecord
from app.kafka.codecs import dead_letter_message, decode_record
from app.kafka.publisher import Message
from app.kafka.topics import DLQ
from app.models import (
    DateWindow,
    DeadLetter,
    Decision,
    FieldError,
    KnownReference,
    PaymentRecord,
    differing_fields,
    field_errors,
)
from app.recording import dedup, failures
from app.recording.payment_store import RecordResult

log = logging.getLogger(__name__)

T = TypeVar("T")


class Store(Protocol):
    async def record(self, records: Sequence[PaymentRecord]) -> RecordResult: ...
    async def stored_fields(self, references: Sequence[str]) -> dict[str, dict[str, str]]: ...
    async def mark_sent(self, batch_ids: Sequence[Any]) -> None: ...
    def holding(self, batch_ids: Sequence[Any]) -> AbstractAsyncContextManager[None]: ...


class ReferenceTable(Protocol):
    def get(self, event: Any, reference: str) -> KnownReference | None: ...
    async def put_many(self, entries: Sequence[tuple[Any, str, KnownReference]]) -> None: ...


class KnownCache(Protocol):
    def get(self, reference: str) -> KnownReference | None: ...
    def put_many(self, entries: Mapping[str, KnownReference]) -> None: ...


class Sink(Protocol):
    async def publish(self, topic: str, messages: Sequence[Message]) -> Any: ...


@dataclass(frozen=True)
class Incoming:
    """One intake message; ``event`` is Faust's, passed back when writing the table."""

    key: bytes | None
    value: bytes | None
    event: Any = None


@dataclass
class BatchReport:
    """What a batch came to (the agent logs it; tests read it)."""

    decisions: list[Decision] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    memory_hits: int = 0
    memory_misses: int = 0
    table_hits: int = 0
    table_misses: int = 0
    postgres_answers: int = 0
    #: References Postgres did not hold before this batch (it created them).
    postgres_misses: int = 0
    #: Every reference of the batch now committed in Postgres, as recorded.
    committed: dict[str, KnownReference] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for decision in self.decisions if decision.outcome == outcome)

    @classmethod
    def merged(cls, reports: Sequence[BatchReport]) -> BatchReport:
        """One report for a batch that was handled in parts (see :mod:`app.recording.failures`)."""
        whole = cls()
        for report in reports:
            whole.decisions += report.decisions
            whole.dead_letters += report.dead_letters
            whole.memory_hits += report.memory_hits
            whole.memory_misses += report.memory_misses
            whole.table_hits += report.table_hits
            whole.table_misses += report.table_misses
            whole.postgres_answers += report.postgres_answers
            whole.postgres_misses += report.postgres_misses
            whole.committed.update(report.committed)
        return whole


@dataclass(frozen=True)
class _Decided:
    """A batch after steps 1 to 3: its report, what Postgres recorded, its decoded records."""

    report: BatchReport
    result: RecordResult
    records: list[tuple[Incoming, PaymentRecord]]


class Recorder:
    """Turns batches of intake messages into decisions; see the module doc for the order."""

    def __init__(
        self,
        store: Store,
        references: ReferenceTable,
        publisher: Sink,
        *,
        events_topic: str,
        window: DateWindow,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        crash_after_commit: Callable[[], None] | None = None,
        announce: Callable[[BatchReport], Awaitable[None]] | None = None,
        memory: KnownCache | None = None,
    ) -> None:
        self.store = store
        self.references = references
        self.publisher = publisher
        self.events_topic = events_topic
        self.window = window
        self.sleep = sleep
        self._crash_after_commit = crash_after_commit
        self._announce = announce
        self.memory = memory
        self._turn = asyncio.Lock()

    async def handle(
        self, batch: Sequence[Incoming], committed: Callable[[], None] | None = None
    ) -> BatchReport:
        """Decide ``batch``; ``committed()`` once its decisions are made and committed."""
        async with self._turn:
            decided = await self._decide(batch)
        if committed is not None:
            committed()
        await self._finish(decided)
        return decided.report

    async def _decide(self, batch: Sequence[Incoming]) -> _Decided:
        """Steps 1 to 3: every record of ``batch`` decided, the new ones committed."""
        report = BatchReport()
        now = datetime.now(UTC)
        # 1. decode and check
        records: list[tuple[Incoming, PaymentRecord]] = []
        for item in batch:
            record = self._decode(item, now, report)
            if record is not None:
                records.append((item, record))

        # 2. memory, then the table, for the first occurrence of each reference
        known: dict[str, KnownReference] = {}
        candidates: dict[str, PaymentRecord] = {}
        memory = self.memory
        for item, record in records:
            reference = record.reference_number
            if reference in known or reference in candidates:
                continue
            if memory is not None:
                hit = memory.get(reference)
                if hit is not None:
                    known[reference] = hit
                    report.memory_hits += 1
                    continue
                report.memory_misses += 1
            hit = self.references.get(item.event, reference)
            if hit is not None:
                known[reference] = hit
                report.table_hits += 1
            else:
                candidates[reference] = record
                report.table_misses += 1

        # 3. Postgres, one transaction (or one per record if the batch is refused)
        result = RecordResult()
        refused: dict[str, str] = {}
        if candidates:
            result = await self._record(list(candidates.values()), refused)
        if result.created and self._crash_after_commit is not None:
            self._crash_after_commit()
        created = {record.reference_number: record for record in result.created}
        for reference, stored in result.existing.items():
            known[reference] = stored
            report.postgres_answers += 1
        for reference, record in created.items():
            known[reference] = KnownReference(record.fingerprint, record.payment_id)
        report.postgres_misses = len(created)
        if memory is not None:
            memory.put_many(known)  # all committed now

        # Decide every record in arrival order: the first carrier of a created
        # reference created it; everything else is compared with what is recorded.
        conflicts: list[PaymentRecord] = []
        creators_seen: set[str] = set()
        for _, record in records:
            reference = record.reference_number
            if reference in refused:
                # Every record carrying a refused reference gets its own letter, not
                # only the one that went to Postgres: each was promised a decision.
                report.dead_letters.append(
                    _letter(
                        record,
                        "rejected",
                        now,
                        details=[FieldError(field="record", message=refused[reference])],
                    )
                )
                continue
            if reference not in known:
                continue  # cannot be: each candidate is created, existing or refused
            first = reference in created and reference not in creators_seen
            if first:
                creators_seen.add(reference)
            outcome = dedup.outcome_for(record, known[reference].fingerprint, first=first)
            if outcome == "conflict":
                conflicts.append(record)
                continue
            report.decisions.append(
                dedup.decision(
                    reference,
                    outcome,
                    payment_id=known[reference].payment_id,
                    source=record.source,
                    source_id=record.source_id,
                    channel=record.payment_channel,
                )
            )
        if conflicts:
            await self._conflicts(conflicts, known, created, report, now)
        report.committed = known
        return _Decided(report, result, records)

    async def _finish(self, decided: _Decided) -> None:
        """Step 4: announce, publish events and dead letters, write the table, mark sent."""
        report, result, records = decided.report, decided.result, decided.records
        known = report.committed
        # Publish events and dead letters and write the table (it needs only the
        # commit), at once; then mark the events sent.
        events: list[Message] = [(event.key, event.payload) for event in result.events]
        letters: list[Message] = [dead_letter_message(letter) for letter in report.dead_letters]
        first_event: dict[str, Any] = {}
        for item, record in records:
            first_event.setdefault(record.reference_number, item.event)
        entries = [
            (first_event[reference], reference, known[reference])
            for reference in (
                *(record.reference_number for record in result.created),
                *result.existing,
            )
        ]
        # The decisions need only the commit: announce them (webhook views are
        # waiting) while the events and the table are written. Never raises.
        announced = self._announce(report) if self._announce is not None else asyncio.sleep(0)
        # The outbox rows stay ours while we publish, however long the retries take:
        # the relay would send the same events again.
        batches = result.outbox_batches
        async with self.store.holding(batches):
            await asyncio.gather(
                self._retrying("publish", lambda: self._publish(events, letters)),
                self._retrying(
                    "write the references table", lambda: self.references.put_many(entries)
                ),
                announced,
            )
            if batches:
                await self._retrying("mark outbox sent", lambda: self.store.mark_sent(batches))

    def _decode(self, item: Incoming, now: datetime, report: BatchReport) -> PaymentRecord | None:
        try:
            record = decode_record(item.value)
        except UndecodableRecord as exc:
            report.dead_letters.append(
                DeadLetter(
                    reason="undecodable",
                    details=[FieldError(field="body", message=str(exc))],
                    reference_number=_text(item.key),
                    original_text=_text(item.value),
                    failed_at=now,
                )
            )
            return None
        except ValidationError as exc:
            original = _json_object(item.value)
            report.dead_letters.append(
                DeadLetter(
                    reason="invalid",
                    details=field_errors(exc),
                    reference_number=_text(item.key),
                    source=_get(original, "source"),
                    source_id=_get(original, "source_id"),
                    original=original,
                    failed_at=now,
                )
            )
            return None
        refusal = self.window.check(record.payment_date, now, recording=True)
        if refusal is not None:
            # Ingress checks the window too; a record that got past it (other
            # settings, a replay, a wait in the intake across a month boundary) must
            # not create a far-off partition, nor go into a month prune drops.
            report.dead_letters.append(
                _letter(
                    record,
                    "beyond_retention" if refusal.beyond_retention else "partition_out_of_range",
                    now,
                    details=[FieldError(field="payment_date", message=refusal.message)],
                )
            )
            return None
        return record

    async def _record(
        self, candidates: list[PaymentRecord], refused: dict[str, str]
    ) -> RecordResult:
        """Record ``candidates``; the references Postgres refuses go to ``refused``, with why."""
        try:
            return await self._retrying("record batch", lambda: self.store.record(candidates))
        except RecordsRefused as exc:
            if len(candidates) == 1:
                refused[candidates[0].reference_number] = str(exc)
                log.error("Postgres refused reference %s: %s", candidates[0].reference_number, exc)
                return RecordResult()
            # Find the record Postgres refuses without losing the rest of the batch.
            log.warning(
                "Postgres refused a batch of %d (%s); recording one by one", len(candidates), exc
            )
            merged = RecordResult()
            for candidate in candidates:
                single = await self._record([candidate], refused)
                merged.created += single.created
                merged.events += single.events
                merged.existing.update(single.existing)
                merged.outbox_batches += single.outbox_batches
            return merged

    async def _conflicts(
        self,
        conflicts: list[PaymentRecord],
        known: dict[str, KnownReference],
        created: dict[str, PaymentRecord],
        report: BatchReport,
        now: datetime,
    ) -> None:
        outside = sorted({r.reference_number for r in conflicts} - set(created))
        stored = await self._retrying(
            "read conflicting payments", lambda: self.store.stored_fields(outside)
        )
        for record in conflicts:
            reference = record.reference_number
            if reference in created:
                original = created[reference].defining_fields()
            else:
                original = stored.get(reference, {})
            fields = differing_fields(original, record.defining_fields()) if original else []
            letter = _letter(record, "conflict", now, payment_id=known[reference].payment_id)
            letter.differing_fields = fields
            report.dead_letters.append(letter)
            report.decisions.append(
                dedup.decision(
                    reference,
                    "conflict",
                    payment_id=known[reference].payment_id,
                    source=record.source,
                    source_id=record.source_id,
                    differing_fields=fields,
                    channel=record.payment_channel,
                )
            )

    async def _publish(self, events: list[Message], letters: list[Message]) -> None:
        await asyncio.gather(
            self.publisher.publish(self.events_topic, events),
            self.publisher.publish(DLQ, letters),
        )

    async def _retrying(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` through every outage; raise anything else at once."""
        return await failures.retrying(what, operation, sleep=self.sleep)

    async def unprocessable(self, item: Incoming, error: BaseException) -> BatchReport:
        """Dead-letter ``item``, which keeps failing for a reason nobody foresaw (``error``).

        The letter carries the error's type and message, and the record as it arrived.
        It is published (through outages) before this returns, so the agent may ack it.
        """
        original = _json_object(item.value)
        letter = DeadLetter(
            reason="unprocessable",
            details=[FieldError(field="record", message=failures.describe(error))],
            reference_number=_get(original, "reference_number") or _text(item.key),
            source=_get(original, "source"),
            source_id=_get(original, "source_id"),
            original=original,
            original_text=_text(item.value) if original is None else None,
            failed_at=datetime.now(UTC),
        )
        message = dead_letter_message(letter)
        await self._retrying(
            "publish a dead letter", lambda: self.publisher.publish(DLQ, [message])
        )
        report = BatchReport(dead_letters=[letter])
        if self._announce is not None:
            await self._announce(report)  # a webhook waiting for this record is answered 422
        return report


def _letter(record: PaymentRecord, reason: Any, now: datetime, **extra: Any) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        reference_number=record.reference_number,
        source=record.source,
        source_id=record.source_id,
        original=record.model_dump(mode="json"),
        failed_at=now,
        **extra,
    )


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8", errors="replace")


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _get(original: dict[str, Any] | None, name: str) -> str | None:
    value = None if original is None else original.get(name)
    return None if value is None else str(value)
