"""The failure policy with fakes: outages wait, the unforeseen is isolated, nothing vanishes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from pydantic_core import to_json

from agents.record_payments import record_batch
from app.exceptions import PublishFailed
from app.kafka.codecs import (
    DEAD_LETTER_MAX_BYTES,
    dead_letter_message,
    decode_dead_letter,
    encode_record,
)
from app.models import DeadLetter, FieldError, PaymentRecord
from app.recording import failures
from app.recording.decisions import REFUSED_MESSAGES, Answer, DecisionBoard, decision_key
from app.recording.payment_store import RecordResult
from app.recording.recorder import Incoming
from tests.unit.post_script_redis import FakeRedis
from tests.unit.test_recorder import FakeStore, Harness, incoming, payment
from tests.unit.test_webhooks import GENERIC, documented_example, fields, rejection

#: Converted to UTC, this date falls in year 0: Python's datetime overflows.
OVERFLOWING_DATE = "0001-01-01T00:00:00+14:00"


class PoisonedStore(FakeStore):
    """Postgres that fails, unforeseen, every transaction holding one reference."""

    def __init__(self, poison: str, error: BaseException) -> None:
        super().__init__()
        self.poison = poison
        self.error = error

    async def record(self, records: Sequence[PaymentRecord]) -> RecordResult:
        if any(record.reference_number == self.poison for record in records):
            self.transactions += 1
            raise self.error
        return await super().record(records)


def poisoned(poison: str, error: BaseException) -> Harness:
    harness = Harness()
    harness.store = harness.recorder.store = PoisonedStore(poison, error)  # type: ignore[assignment]
    return harness


class Sleeps:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


# --- the agent: one poison record among good ones ------------------------------------


async def test_a_record_that_keeps_failing_is_dead_lettered_and_the_rest_recorded() -> None:
    harness = poisoned("REF-5", RuntimeError("nobody saw this coming"))
    records = [payment(f"REF-{n}") for n in range(12)]
    report = await record_batch(harness.recorder, [incoming(r) for r in records])

    assert sorted(d.reference_number for d in report.decisions) == sorted(
        f"REF-{n}" for n in range(12) if n != 5
    )
    assert {d.outcome for d in report.decisions} == {"created"}
    (letter,) = harness.letters()
    assert (letter.reason, letter.reference_number) == ("unprocessable", "REF-5")
    assert letter.details == [
        FieldError(field="record", message="RuntimeError: nobody saw this coming")
    ]
    assert letter.original["reference_number"] == "REF-5"
    assert (letter.source, letter.source_id) == ("staging", "1")
    assert [r.reason for r in report.dead_letters] == ["unprocessable"]
    assert len(harness.events()) == 11
    # bounded: 3 tries of the batch, one per half on the way down, 3 of the lone record
    assert harness.store.transactions <= 3 + 2 * 4 + 3
    assert len(harness.pauses) <= 2 + 2


async def test_an_undecodable_value_that_fails_later_is_dead_lettered_as_text() -> None:
    harness = poisoned("REF-0", ValueError("boom"))
    raw = Incoming(b"REF-0", encode_record(payment("REF-0")))
    report = await record_batch(harness.recorder, [raw, incoming(payment("REF-1"))])
    assert [d.reference_number for d in report.decisions] == ["REF-1"]
    (letter,) = harness.letters()
    assert letter.reason == "unprocessable"
    assert letter.details[0].message == "ValueError: boom"


async def test_a_passing_fluke_is_retried_and_the_batch_recorded_whole() -> None:
    harness = Harness()
    harness.store.fail_next = [RuntimeError("fluke"), RuntimeError("fluke again")]
    report = await record_batch(harness.recorder, [incoming(payment(f"R{n}")) for n in range(4)])
    assert [d.outcome for d in report.decisions] == ["created"] * 4
    assert harness.letters() == []
    assert harness.store.transactions == 3
    assert harness.pauses == [failures.RETRY_FIRST_SECONDS, 2 * failures.RETRY_FIRST_SECONDS]


async def test_an_outage_is_waited_out_however_long_it_lasts() -> None:
    harness = Harness()
    harness.store.fail_next = [OSError("Postgres away")] * 40
    report = await record_batch(harness.recorder, [incoming(payment("R1"))])
    assert [d.outcome for d in report.decisions] == ["created"]
    assert harness.letters() == []
    assert len(harness.pauses) == 40
    assert max(harness.pauses) == failures.RETRY_MAX_SECONDS


async def test_settle_waits_out_outages_and_isolates_the_rest() -> None:
    sleep = Sleeps()
    calls: list[list[int]] = []
    outages = iter([KafkaConnectionError("down")] * 25)

    async def handle(items: Sequence[int]) -> str:
        calls.append(list(items))
        outage = next(outages, None)
        if outage is not None:
            raise outage
        if 3 in items:
            raise KeyError("three")
        return f"ok {list(items)}"

    async def dead_letter(item: int, error: BaseException) -> str:
        return f"dead {item}: {failures.describe(error)}"

    results = await failures.settle("test", [1, 2, 3, 4], handle, dead_letter, sleep=sleep)
    assert results == ["ok [1, 2]", "dead 3: KeyError: 'three'", "ok [4]"]
    assert len(sleep.pauses) >= 25  # the outage: every attempt waited, none counted


async def test_a_record_error_is_not_retried() -> None:
    sleep = Sleeps()

    async def handle(items: Sequence[int]) -> str:
        if 2 in items:
            too_large = MessageSizeTooLargeError()
            raise PublishFailed("Kafka refused a send") from too_large
        return "ok"

    async def dead_letter(item: int, error: BaseException) -> str:
        return f"dead {item}"

    results = await failures.settle("test", [1, 2], handle, dead_letter, sleep=sleep)
    assert results == ["ok", "dead 2"]
    assert sleep.pauses == []


def test_publish_failures_are_outages_unless_the_record_is_too_large() -> None:
    away = PublishFailed("no broker")
    away.__cause__ = KafkaConnectionError()
    too_large = PublishFailed("refused")
    too_large.__cause__ = MessageSizeTooLargeError()
    assert failures.is_outage(away)
    assert not failures.is_outage(too_large)
    assert failures.is_record_error(too_large)
    assert failures.is_outage(OSError("reset"))
    assert not failures.is_outage(RuntimeError("a bug"))


# --- item 5: every carrier of a refused reference ----------------------------------


async def test_every_record_carrying_a_refused_reference_is_dead_lettered() -> None:
    harness = Harness()
    harness.store.refuse = {"REF-2"}
    batch = [
        payment("REF-1"),
        payment("REF-2", source="webhook", source_id="w-a"),
        payment("REF-3"),
        payment("REF-2", source="webhook", source_id="w-b"),
        payment("REF-2", amount="99.00", source="webhook", source_id="w-c"),
    ]
    report = await harness.recorder.handle([incoming(r) for r in batch])
    assert sorted(d.reference_number for d in report.decisions) == ["REF-1", "REF-3"]
    letters = harness.letters()
    assert [(x.reason, x.reference_number, x.source_id) for x in letters] == [
        ("rejected", "REF-2", "w-a"),
        ("rejected", "REF-2", "w-b"),
        ("rejected", "REF-2", "w-c"),
    ]
    assert all(x.details[0].message == "value refused" for x in letters)


# --- dead letters that would be too large ------------------------------------------


def _huge_letter(**changes: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "reason": "invalid",
        "details": [FieldError(field="metadata", message="must be at most 16384 bytes as JSON")],
        "reference_number": "REF-HUGE",
        "source": "staging",
        "source_id": "42",
        "original": {"id": 42, "metadata": "x" * (2 * 1024 * 1024)},
        "failed_at": datetime.now(UTC),
    }
    values.update(changes)
    return DeadLetter(**values)


def test_a_dead_letter_too_large_is_cut_down_to_fit_with_a_digest() -> None:
    letter = _huge_letter()
    original = to_json(letter.original)
    key, value = dead_letter_message(letter)
    assert key == b"REF-HUGE"
    assert len(key) + len(value) <= DEAD_LETTER_MAX_BYTES
    cut = decode_dead_letter(value)
    assert (cut.reason, cut.reference_number, cut.source, cut.source_id) == (
        "invalid",
        "REF-HUGE",
        "staging",
        "42",
    )
    assert cut.original is None
    assert cut.original_text is None
    assert cut.details[0] == letter.details[0]
    note = cut.details[-1]
    assert note.field == "original"
    assert hashlib.sha256(original).hexdigest() in note.message
    assert f"({len(original)} bytes" in note.message


def test_undecodable_bytes_with_a_huge_key_still_fit() -> None:
    letter = _huge_letter(
        reason="undecodable",
        reference_number="K" * 900_000,
        original=None,
        original_text="\u00e9" * 600_000,
    )
    key, value = dead_letter_message(letter)
    assert key is not None
    assert len(key) + len(value) <= DEAD_LETTER_MAX_BYTES
    digest = hashlib.sha256(("\u00e9" * 600_000).encode()).hexdigest()
    assert digest in decode_dead_letter(value).details[-1].message


def test_a_dead_letter_that_fits_is_sent_whole() -> None:
    letter = _huge_letter(original={"id": 42, "metadata": "small"})
    key, value = dead_letter_message(letter)
    assert (key, json.loads(value)) == (b"REF-HUGE", json.loads(letter.model_dump_json()))


# --- a date that overflows in UTC is a field error, not a crash --------------------


def test_an_overflowing_payment_date_is_a_field_error_on_the_webhook() -> None:
    refused = rejection(GENERIC, documented_example("generic") | {"payment_date": OVERFLOWING_DATE})
    assert refused.status == 422
    assert fields(refused) == ["payment_date"]


async def test_an_overflowing_payment_date_on_the_intake_is_an_invalid_dead_letter() -> None:
    harness = Harness()
    value = json.loads(encode_record(payment("REF-OLD")))
    value["payment_date"] = OVERFLOWING_DATE
    bad = Incoming(b"REF-OLD", json.dumps(value).encode())
    report = await harness.recorder.handle([bad, incoming(payment("REF-GOOD"))])
    assert [d.reference_number for d in report.decisions] == ["REF-GOOD"]
    (letter,) = harness.letters()
    assert (letter.reason, [d.field for d in letter.details]) == ("invalid", ["payment_date"])


@pytest.mark.parametrize("received_at", [OVERFLOWING_DATE, "9999-12-31T23:00:00-05:00"])
def test_received_at_out_of_range_is_a_field_error(received_at: str) -> None:
    value = json.loads(encode_record(payment()))
    value["received_at"] = received_at
    with pytest.raises(ValueError, match="between years 1 and 9999"):
        PaymentRecord.model_validate_json(json.dumps(value))


async def test_every_webhook_carrying_a_refused_reference_is_answered_422() -> None:
    redis = FakeRedis()
    board = DecisionBoard(redis)  # type: ignore[arg-type]
    harness = Harness(
        lambda report: board.post(report.decisions, report.committed, report.dead_letters)
    )
    harness.store.refuse = {"REF-2"}
    waiting = {
        webhook_id: board.expect("generic", webhook_id) for webhook_id in ("w-a", "w-b", "w-ok")
    }
    batch = [
        payment("REF-2", source="webhook", source_id="w-a"),
        payment("REF-2", source="webhook", source_id="w-b"),
        payment("REF-3", source="webhook", source_id="w-ok"),
    ]
    await harness.recorder.handle([incoming(r) for r in batch])
    for announcement in redis.announcements:
        board._deliver(json.dumps(announcement).encode())

    refused = Answer(
        422,
        {
            "error": "rejected",
            "message": REFUSED_MESSAGES["rejected"],
            "errors": [{"field": "record", "message": "value refused"}],
        },
    )
    assert waiting["w-a"].result() == refused
    assert waiting["w-b"].result() == refused
    assert waiting["w-ok"].result().status == 201
    assert Answer.decode(redis.values[decision_key("generic", "w-b")]) == refused  # for replays


async def test_a_webhook_whose_record_is_unprocessable_is_answered_422() -> None:
    redis = FakeRedis()
    board = DecisionBoard(redis)  # type: ignore[arg-type]
    harness = Harness(
        lambda report: board.post(report.decisions, report.committed, report.dead_letters)
    )
    harness.store = harness.recorder.store = PoisonedStore("REF-P", RuntimeError("bad"))  # type: ignore[assignment]
    waiting = board.expect("generic", "w-p")
    await record_batch(
        harness.recorder, [incoming(payment("REF-P", source="webhook", source_id="w-p"))]
    )
    for announcement in redis.announcements:
        board._deliver(json.dumps(announcement).encode())
    assert waiting.result() == Answer(
        422,
        {
            "error": "unprocessable",
            "message": REFUSED_MESSAGES["unprocessable"],
            "errors": [{"field": "record", "message": "RuntimeError: bad"}],
        },
    )
