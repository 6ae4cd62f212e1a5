"""Listing and replaying dead letters, offline: the lines, and the records a replay sends."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from app.exceptions import CommandError
from app.intake.staging import prepare_rows
from app.kafka.codecs import dead_letter_message, decode_dead_letter, encode_record
from app.models import DateWindow, DeadLetter, FieldError, PaymentRecord
from app.ops.dlq import (
    CUT_DOWN,
    NO_ORIGINAL,
    NOT_A_RECORD,
    ReplayReport,
    Skip,
    check_reason,
    describe,
    first_problem,
    intake_message,
    record_of,
    summary,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WIDE = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))
NARROW = DateWindow(earliest=date(2026, 11, 20), max_future=timedelta(days=1))


#: A staging row's payment_date (naive UTC, as the column holds it), before NARROW.
OCTOBER = datetime(2026, 10, 1, 9, 30)  # noqa: DTZ001


def staging_row(amount: str = "12.34") -> tuple[Any, ...]:
    """A row as the poller claims it (ROW_COLUMNS)."""
    return (7, "REF-7", "LA-7", "CIF-7", Decimal(amount), OCTOBER, "card", '{"k": "v"}')


def test_describe_names_place_reason_reference_source_time_and_the_problem() -> None:
    letter = DeadLetter(
        reason="invalid",
        details=[FieldError(field="amount", message="must be positive")],
        reference_number="REF-1",
        source="staging",
        source_id="42",
        failed_at=NOW,
    )
    assert describe(2, 17, letter) == (
        "2/17  invalid                 ref=REF-1  source=staging:42  "
        "failed_at=2026-11-28T12:00:00+00:00  amount: must be positive"
    )


def test_first_problem_prefers_differing_fields_and_counts_the_other_errors() -> None:
    conflict = DeadLetter(reason="conflict", differing_fields=["amount", "cif"], failed_at=NOW)
    assert first_problem(conflict) == "differs: amount,cif"
    invalid = DeadLetter(
        reason="invalid",
        details=[FieldError(field="a", message="x"), FieldError(field="b", message="y")],
        failed_at=NOW,
    )
    assert first_problem(invalid) == "a: x (+1 more)"
    assert first_problem(DeadLetter(reason="rejected", failed_at=NOW)) == ""
    assert describe(0, 0, DeadLetter(reason="undecodable", failed_at=NOW)).endswith("+00:00")


def test_summary_counts_by_reason_most_frequent_first() -> None:
    assert summary(Counter({"conflict": 2, "invalid": 5})) == [
        "  invalid: 5",
        "  conflict: 2",
        "total: 7",
    ]
    assert summary(Counter()) == ["total: 0"]


def test_a_staging_row_dead_lettered_for_its_date_replays_as_the_poller_would_send_it() -> None:
    refused = prepare_rows([staging_row()], NARROW, NOW)
    assert refused.records == []
    _, value = refused.letters[0]
    letter = decode_dead_letter(value)
    assert letter.reason == "invalid"

    record = record_of(letter)
    assert isinstance(record, PaymentRecord)
    # What the poller publishes for the same row once the window allows it: same bytes.
    accepted = prepare_rows([staging_row()], WIDE, NOW)
    reference, sent = accepted.records[0].reference_number, accepted.records[0].value
    assert intake_message(record) == (reference.encode(), sent)
    assert (record.source, record.source_id, record.metadata) == ("staging", "7", {"k": "v"})


def test_an_agent_dead_letter_replays_its_record_unchanged() -> None:
    record = PaymentRecord.model_validate(
        {
            "reference_number": "REF-9",
            "loan_account_number": "LA-9",
            "cif": "CIF-9",
            "amount": "5.00",
            "payment_date": datetime(1999, 1, 1, tzinfo=UTC),
            "source": "webhook",
            "source_id": "msg_9",
            "received_at": NOW,
        }
    )
    letter = DeadLetter(
        reason="partition_out_of_range",
        reference_number=record.reference_number,
        source=record.source,
        source_id=record.source_id,
        original=record.model_dump(mode="json"),
        failed_at=NOW,
    )
    replayed = record_of(decode_dead_letter(letter.model_dump_json().encode()))
    assert replayed == record
    assert intake_message(record) == (b"REF-9", encode_record(record))


def test_letters_without_a_valid_original_are_skipped_with_why() -> None:
    undecodable = DeadLetter(reason="undecodable", original_text="{nope", failed_at=NOW)
    assert record_of(undecodable) == Skip(NO_ORIGINAL)
    too_large = DeadLetter(
        reason="invalid", original={"metadata": "x" * 2_000_000}, source="staging", failed_at=NOW
    )
    assert record_of(decode_dead_letter(dead_letter_message(too_large)[1])) == Skip(CUT_DOWN)

    bad_row = prepare_rows([staging_row(amount="-5.00")], WIDE, NOW)
    skip = record_of(decode_dead_letter(bad_row.letters[0][1]))
    assert isinstance(skip, Skip)
    assert skip.why == NOT_A_RECORD
    assert skip.detail.startswith("amount:")

    broken = DeadLetter(reason="invalid", original={"reference_number": "X"}, failed_at=NOW)
    skip = record_of(broken)
    assert isinstance(skip, Skip)
    assert skip.why == NOT_A_RECORD

    row = json.loads(bad_row.letters[0][1])["original"]
    del row["id"]
    no_id = DeadLetter(reason="invalid", source="staging", original=row, failed_at=NOW)
    assert isinstance(record_of(no_id), Skip)


def test_reasons_are_checked_against_the_dead_letter_model() -> None:
    assert check_reason(None) is None
    assert check_reason("partition_out_of_range") == "partition_out_of_range"
    with pytest.raises(CommandError, match="unknown reason 'nope': use one of invalid"):
        check_reason("nope")


def test_the_replay_report_counts_what_was_sent_and_why_the_rest_was_not() -> None:
    report = ReplayReport(scanned=10, matched=8, replayed=5)
    report.skipped.update({NOT_A_RECORD: 2, NO_ORIGINAL: 1})
    assert report.lines(dry_run=True) == [
        "scanned 10 dead letters, 8 matching",
        "would replay: 5",
        "skipped: 3",
        f"  {NOT_A_RECORD}: 2",
        f"  {NO_ORIGINAL}: 1",
    ]
    assert report.lines(dry_run=False)[1] == "replayed: 5"
