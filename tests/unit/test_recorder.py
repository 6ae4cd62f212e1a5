"""The record agent's decisions with fakes: created, duplicate, conflict, dead letters, retries."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.exceptions import PublishFailed, RecordsRefused
from app.kafka.codecs import decode_dead_letter, encode_event, encode_record
from app.kafka.topics import DLQ
from app.models import DateWindow, KnownReference, PaymentRecord, PaymentRecordedEvent
from app.recording.payment_store import OutgoingEvent, RecordResult
from app.recording.recorder import BatchReport, Incoming, Recorder

EVENTS = "payment.events"
WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)


def payment(reference: str = "REF-1", amount: str = "10.00", **changes: Any) -> PaymentRecord:
    values: dict[str, Any] = {
        "reference_number": reference,
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": amount,
        "payment_date": YESTERDAY,
        "source": "staging",
        "source_id": "1",
        "received_at": datetime.now(UTC),
    }
    values.update(changes)
    return PaymentRecord.model_validate(values)


def incoming(record: PaymentRecord) -> Incoming:
    return Incoming(record.reference_number.encode(), encode_record(record), event=record.source_id)


class FakeStore:
    """Postgres as a dict: the reference is the primary key."""

    def __init__(self) -> None:
        self.references: dict[str, KnownReference] = {}
        self.rows: dict[str, PaymentRecord] = {}
        self.outbox: dict[uuid.UUID, list[Any]] = {}
        self.sent: list[Any] = []
        self.transactions = 0
        self.fail_next: list[BaseException] = []
        self.refuse: set[str] = set()
        #: The outbox batches each batch's publish held against the relay.
        self.held: list[list[Any]] = []
        self.holding_now: set[Any] = set()

    async def record(self, records: Sequence[PaymentRecord]) -> RecordResult:
        self.transactions += 1
        if self.fail_next:
            raise self.fail_next.pop(0)
        if any(record.reference_number in self.refuse for record in records):
            raise RecordsRefused("value refused")
        result = RecordResult()
        for record in records:
            reference = record.reference_number
            if reference in self.references:
                result.existing[reference] = self.references[reference]
                continue
            self.references[reference] = KnownReference(record.fingerprint, record.payment_id)
            self.rows[reference] = record
            result.created.append(record)
            event = PaymentRecordedEvent.for_record(record, datetime.now(UTC))
            result.events.append(
                OutgoingEvent(
                    event.event_id, record.loan_account_number.encode(), encode_event(event)
                )
            )
        if result.events:
            batch_id = uuid.uuid4()
            self.outbox[batch_id] = [event.event_id for event in result.events]
            result.outbox_batches.append(batch_id)
        return result

    async def stored_fields(self, references: Sequence[str]) -> dict[str, dict[str, str]]:
        return {ref: self.rows[ref].defining_fields() for ref in references if ref in self.rows}

    async def mark_sent(self, batch_ids: Sequence[Any]) -> None:
        for batch_id in batch_ids:
            self.sent += self.outbox.pop(batch_id)

    @contextlib.asynccontextmanager
    async def holding(self, batch_ids: Sequence[Any]) -> AsyncIterator[None]:
        self.held.append(list(batch_ids))
        self.holding_now = set(batch_ids)
        try:
            yield
        finally:
            self.holding_now = set()


class FakeTable:
    def __init__(self) -> None:
        self.data: dict[str, KnownReference] = {}
        self.writes: list[tuple[Any, str]] = []

    def get(self, event: Any, reference: str) -> KnownReference | None:
        return self.data.get(reference)

    async def put_many(self, entries: Sequence[tuple[Any, str, KnownReference]]) -> None:
        for event, reference, known in entries:
            self.writes.append((event, reference))
            self.data[reference] = known


class FakePublisher:
    def __init__(self) -> None:
        self.topics: dict[str, list[tuple[bytes | None, bytes]]] = {}
        self.fail_next: list[BaseException] = []

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.topics.setdefault(topic, []).extend(messages)


class Harness:
    def __init__(self, announce: Callable[[BatchReport], Awaitable[None]] | None = None) -> None:
        self.store = FakeStore()
        self.table = FakeTable()
        self.publisher = FakePublisher()
        self.pauses: list[float] = []

        async def sleep(seconds: float) -> None:
            self.pauses.append(seconds)

        self.recorder = Recorder(
            self.store,
            self.table,
            self.publisher,
            events_topic=EVENTS,
            window=WINDOW,
            sleep=sleep,
            announce=announce,
        )

    def letters(self) -> list[Any]:
        return [decode_dead_letter(value) for _, value in self.publisher.topics.get(DLQ, [])]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(value) for _, value in self.publisher.topics.get(EVENTS, [])]


@pytest.fixture
def harness() -> Harness:
    return Harness()


async def test_new_references_are_created_once_with_one_event_each(harness: Harness) -> None:
    records = [payment(f"REF-{n}") for n in range(5)]
    report = await harness.recorder.handle([incoming(r) for r in records])
    assert [d.outcome for d in report.decisions] == ["created"] * 5
    assert [d.payment_id for d in report.decisions] == [r.payment_id for r in records]
    assert harness.store.transactions == 1
    assert len(harness.events()) == 5
    assert {e["event_id"] for e in harness.events()} == {str(r.event_id) for r in records}
    assert len(harness.store.sent) == 5
    assert set(harness.table.data) == {r.reference_number for r in records}
    # the table learns each reference with the event that carried it
    assert sorted(harness.table.writes) == sorted(
        (r.source_id, r.reference_number) for r in records
    )


async def test_a_table_hit_is_a_duplicate_without_asking_postgres(harness: Harness) -> None:
    await harness.recorder.handle([incoming(payment())])
    report = await harness.recorder.handle([incoming(payment(source="webhook", source_id="w1"))])
    assert [(d.outcome, d.payment_id) for d in report.decisions] == [
        ("duplicate", payment().payment_id)
    ]
    assert report.table_hits == 1
    assert harness.store.transactions == 1
    assert len(harness.events()) == 1


async def test_postgres_answers_what_the_table_does_not_know(harness: Harness) -> None:
    await harness.recorder.handle([incoming(payment())])
    harness.table.data.clear()  # RocksDB state lost: only Postgres knows
    report = await harness.recorder.handle([incoming(payment())])
    assert [d.outcome for d in report.decisions] == ["duplicate"]
    assert report.postgres_answers == 1
    assert len(harness.events()) == 1
    assert "REF-1" in harness.table.data  # warmed again


async def test_same_reference_other_content_is_a_conflict_with_the_fields(harness: Harness) -> None:
    await harness.recorder.handle([incoming(payment(amount="10.00"))])
    report = await harness.recorder.handle([incoming(payment(amount="11.00", cif="CIF-9"))])
    assert [(d.outcome, d.differing_fields) for d in report.decisions] == [
        ("conflict", ("cif", "amount"))
    ]
    (letter,) = harness.letters()
    assert letter.reason == "conflict"
    assert letter.differing_fields == ["cif", "amount"]
    assert letter.payment_id == payment().payment_id
    assert harness.store.rows["REF-1"].amount == payment().amount


async def test_a_notice_naming_the_currency_of_a_payment_recorded_without_one_is_a_duplicate(
    harness: Harness,
) -> None:
    # Recorded before the currency was a field: its fingerprint has none.
    await harness.recorder.handle([incoming(payment())])
    in_dollars = payment(currency="USD", source="webhook", source_id="w1")
    report = await harness.recorder.handle([incoming(in_dollars)])
    assert [d.outcome for d in report.decisions] == ["duplicate"]
    assert harness.letters() == []
    other = payment(amount="11.00", currency="USD", source="webhook", source_id="w2")
    report = await harness.recorder.handle([incoming(other)])
    assert [(d.outcome, d.differing_fields) for d in report.decisions] == [
        ("conflict", ("amount", "currency"))
    ]


async def test_repeats_inside_one_batch(harness: Harness) -> None:
    first, again, changed = (
        payment(),
        payment(source_id="2"),
        payment(amount="99.00", source_id="3"),
    )
    report = await harness.recorder.handle([incoming(first), incoming(again), incoming(changed)])
    assert [d.outcome for d in report.decisions] == ["created", "duplicate", "conflict"]
    assert harness.letters()[0].differing_fields == ["amount"]
    assert len(harness.events()) == 1


async def test_bad_records_become_dead_letters_and_the_rest_goes_on(harness: Harness) -> None:
    good = payment("GOOD")
    invalid = json.loads(encode_record(payment("BAD")))
    invalid["amount"] = "-1"
    far = payment("FAR", payment_date=datetime(1990, 1, 1, tzinfo=UTC))
    batch = [
        Incoming(b"JUNK", b"\xff not json"),
        Incoming(b"BAD", json.dumps(invalid).encode()),
        incoming(far),
        incoming(good),
    ]
    report = await harness.recorder.handle(batch)
    assert [d.reference_number for d in report.decisions] == ["GOOD"]
    reasons = {letter.reference_number: letter.reason for letter in harness.letters()}
    assert reasons == {"JUNK": "undecodable", "BAD": "invalid", "FAR": "partition_out_of_range"}
    bad = next(letter for letter in harness.letters() if letter.reason == "invalid")
    assert [detail.field for detail in bad.details] == ["amount"]
    assert bad.original["reference_number"] == "BAD"


async def test_outages_are_retried_until_they_pass(harness: Harness) -> None:
    harness.store.fail_next = [OSError("connection reset"), asyncpg.PostgresConnectionError("gone")]
    harness.publisher.fail_next = [PublishFailed("broker away")]
    report = await harness.recorder.handle([incoming(payment())])
    assert [d.outcome for d in report.decisions] == ["created"]
    assert len(harness.pauses) == 3
    assert harness.pauses[0] < harness.pauses[1]
    assert len(harness.events()) == 1


async def test_a_record_postgres_refuses_is_dead_lettered_alone(harness: Harness) -> None:
    harness.store.refuse = {"REF-2"}
    records = [payment(f"REF-{n}") for n in range(4)]
    report = await harness.recorder.handle([incoming(r) for r in records])
    assert sorted(d.reference_number for d in report.decisions) == ["REF-0", "REF-1", "REF-3"]
    (letter,) = harness.letters()
    assert (letter.reason, letter.reference_number) == ("rejected", "REF-2")


async def test_a_bug_is_not_retried_forever_here(harness: Harness) -> None:
    harness.store.fail_next = [ValueError("a bug")]
    with pytest.raises(ValueError, match="a bug"):
        await harness.recorder.handle([incoming(payment())])
    assert harness.table.data == {}
    assert harness.events() == []


async def test_crash_point_fires_after_the_commit_and_before_the_publish() -> None:
    harness = Harness()

    class Crashed(Exception):
        pass

    def crash() -> None:
        raise Crashed

    harness.recorder._crash_after_commit = crash
    with pytest.raises(Crashed):
        await harness.recorder.handle([incoming(payment())])
    assert "REF-1" in harness.store.references
    assert harness.events() == []
    assert harness.table.data == {}


async def test_decisions_are_announced_after_the_commit_while_kafka_is_still_retried() -> None:
    announced: list[tuple[int, list[str], int]] = []

    async def announce(report: BatchReport) -> None:
        # What the waiting webhook views learn, and how far the batch was then.
        outcomes = [decision.outcome for decision in report.decisions]
        announced.append((harness.store.transactions, outcomes, len(harness.events())))

    harness = Harness(announce)
    harness.publisher.fail_next = [PublishFailed("broker away"), PublishFailed("still away")]
    await harness.recorder.handle([incoming(payment("REF-A")), incoming(payment("REF-A"))])
    assert announced == [(1, ["created", "duplicate"], 0)]  # committed, no event out yet
    assert len(harness.events()) == 1  # the publish was retried after the announcement
    assert harness.pauses  # ... after a pause


async def test_the_outbox_row_is_held_against_the_relay_until_its_events_are_sent(
    harness: Harness,
) -> None:
    store = harness.store
    publisher = harness.publisher
    held_at_each_send: list[set[Any]] = []
    send = publisher.publish

    async def watched(topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        held_at_each_send.append(set(store.holding_now))
        await send(topic, messages)

    publisher.publish = watched  # type: ignore[method-assign]
    publisher.fail_next = [PublishFailed("broker away"), PublishFailed("still away")]

    await harness.recorder.handle([incoming(payment("HOLD-1"))])

    ((batch,),) = store.held
    # Every attempt, the retries included, ran while the row was held; then it was sent.
    assert held_at_each_send
    assert all(held == {batch} for held in held_at_each_send)
    assert store.outbox == {}
    assert store.holding_now == set()
