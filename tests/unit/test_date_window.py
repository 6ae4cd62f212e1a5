"""The accepted date window against partition retention: what is accepted is never pruned."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from app.intake.staging import prepare_rows
from app.kafka.codecs import decode_dead_letter, encode_record
from app.models import DateWindow, PaymentRecord, beyond_retention, field_errors
from app.months import ACCEPTING_MARGIN, RECORDING_MARGIN, expiry, retention_cutoff
from app.recording.recorder import Incoming, Recorder
from app.settings import Settings
from app.storage.partitions import young_since
from tests.unit.test_recorder import FakePublisher, FakeStore, FakeTable

DAY = timedelta(days=1)
MIN = date(2000, 1, 1)


def window(retention_months: int = 12, earliest: date = MIN) -> DateWindow:
    return DateWindow(earliest=earliest, max_future=DAY, retention_months=retention_months)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "months", "accepting", "recording"),
    [
        # 12 months: November 2025 is dropped on 2026-12-01. Ingress stops taking it
        # ACCEPTING_MARGIN (10 days) before, the agent RECORDING_MARGIN (8 days) before.
        ("2026-11-20 12:00", 12, "2025-11-01", "2025-11-01"),
        ("2026-11-21 00:00", 12, "2025-12-01", "2025-11-01"),
        ("2026-11-22 23:59", 12, "2025-12-01", "2025-11-01"),
        ("2026-11-23 00:00", 12, "2025-12-01", "2025-12-01"),
        # across a year
        ("2026-12-22 00:00", 12, "2026-01-01", "2025-12-01"),
        ("2027-01-15 00:00", 12, "2026-01-01", "2026-01-01"),
        # 1 month: only the current month and the one before it are kept.
        ("2026-11-10 00:00", 1, "2026-10-01", "2026-10-01"),
        ("2026-11-21 00:00", 1, "2026-11-01", "2026-10-01"),
        ("2026-11-30 23:59", 1, "2026-11-01", "2026-11-01"),
        ("2026-03-01 00:00", 1, "2026-02-01", "2026-02-01"),
    ],
)
def test_the_window_starts_at_the_oldest_month_retention_keeps_for_the_margin(
    now: str, months: int, accepting: str, recording: str
) -> None:
    dates = window(months)
    assert dates.earliest_at(at(now)) == at(accepting)
    assert dates.earliest_at(at(now), recording=True) == at(recording)


def test_a_later_payment_date_min_wins_and_stays_a_plain_refusal() -> None:
    dates = window(12, earliest=date(2026, 6, 1))
    now = at("2026-11-28 12:00")
    assert dates.earliest_at(now) == at("2026-06-01")
    refusal = dates.check(at("2026-05-31 23:59"), now)
    assert refusal is not None
    assert (refusal.message, refusal.beyond_retention) == ("must not be before 2026-06-01", False)
    assert dates.check(at("2026-06-01 00:00"), now) is None


def test_an_older_payment_date_is_refused_naming_the_limit_and_retention() -> None:
    now = at("2026-11-28 12:00")
    refusal = window(12).check(at("2024-11-28 12:00"), now)
    assert refusal is not None
    assert refusal.beyond_retention
    assert refusal.message == (
        "must not be before 2025-12-01: older months are past PARTITION_RETENTION_MONTHS=12 "
        "and are dropped"
    )
    assert window(12).check(at("2025-12-01 00:00"), now) is None
    # The future bound is unchanged.
    future = window(12).check(now + 2 * DAY, now)
    assert future is not None
    assert not future.beyond_retention


def test_the_settings_window_carries_retention() -> None:
    dates = DateWindow.of(Settings(partition_retention_months=3))
    assert dates.retention_months == 3
    assert dates.earliest == MIN


#: hypothesis wants naive bounds; the test makes each value UTC.
EARLIEST, LATEST = datetime(2003, 1, 1), datetime(2090, 1, 1)  # noqa: DTZ001


@given(
    now=st.datetimes(min_value=EARLIEST, max_value=LATEST),
    back=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
    waited=st.timedeltas(min_value=timedelta(0), max_value=2 * DAY),
    months=st.integers(min_value=1, max_value=36),
)
def test_what_is_accepted_is_recorded_and_kept_past_the_margin(
    now: datetime, back: timedelta, waited: timedelta, months: int
) -> None:
    now = now.replace(tzinfo=UTC)
    payment_date = now - back
    month = date(payment_date.year, payment_date.month, 1)
    dates = window(months)
    if dates.check(payment_date, now) is None:
        # A record that waited up to two days in the intake is still the agent's to record.
        assert dates.check(payment_date, now + waited, recording=True) is None
    if dates.check(payment_date, now, recording=True) is None:
        # Its month is not pruned before the intake could deliver it again...
        assert datetime.combine(expiry(month, months), datetime.min.time(), UTC) > (
            now + RECORDING_MARGIN
        )
        # ...and prune's belt and braces never counts its row as recorded too late.
        assert now.replace(tzinfo=None) < young_since(month, months)
        assert retention_cutoff(now.date(), months) <= month
    else:
        assert now.replace(tzinfo=None) >= young_since(month, months)
    assert ACCEPTING_MARGIN > RECORDING_MARGIN


TWO_YEARS_AGO = datetime.now(UTC).replace(microsecond=0) - timedelta(days=730)


def values(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "reference_number": "OLD-1",
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": "10.00",
        "payment_date": TWO_YEARS_AGO,
        "source": "staging",
        "source_id": "1",
        "received_at": datetime.now(UTC),
    }
    record.update(changes)
    return record


def test_a_record_older_than_retention_fails_validation_with_its_own_type() -> None:
    with pytest.raises(ValidationError) as caught:
        PaymentRecord.model_validate(values(), context={"window": window(12)})
    assert beyond_retention(caught.value)
    [error] = field_errors(caught.value)
    assert error.field == "payment_date"
    assert error.message.startswith("must not be before ")
    assert "PARTITION_RETENTION_MONTHS=12" in error.message
    # Older than PAYMENT_DATE_MIN is plain invalid, whatever retention keeps...
    with pytest.raises(ValidationError) as ancient:
        PaymentRecord.model_validate(
            values(payment_date=datetime(1999, 12, 31, tzinfo=UTC)), context={"window": window(12)}
        )
    assert not beyond_retention(ancient.value)
    assert field_errors(ancient.value)[0].message == "must not be before 2000-01-01"
    # ...and so when PAYMENT_DATE_MIN is later than retention's start.
    recent = window(12, earliest=(datetime.now(UTC) - 30 * DAY).date())
    with pytest.raises(ValidationError) as plain:
        PaymentRecord.model_validate(
            values(payment_date=datetime.now(UTC) - 60 * DAY), context={"window": recent}
        )
    assert not beyond_retention(plain.value)
    assert field_errors(plain.value)[0].message == f"must not be before {recent.earliest}"


def test_a_staging_row_older_than_retention_is_dead_lettered_beyond_retention() -> None:
    now = datetime.now(UTC)
    old = (7, "OLD-7", "LA-7", "CIF-7", Decimal("1.00"), TWO_YEARS_AGO.replace(tzinfo=None))
    good = (8, "NEW-8", "LA-8", "CIF-8", Decimal("1.00"), now.replace(tzinfo=None) - DAY)
    prepared = prepare_rows([(*old, None, None), (*good, None, None)], window(12), now)
    assert [staged.reference_number for staged in prepared.records] == ["NEW-8"]
    [letter] = [decode_dead_letter(value) for _, value in prepared.letters]
    assert (letter.reason, letter.reference_number, letter.source_id) == (
        "beyond_retention",
        "OLD-7",
        "7",
    )
    assert [detail.field for detail in letter.details] == ["payment_date"]
    assert prepared.errors[0]["id"] == 7


async def test_the_agent_dead_letters_an_intake_record_beyond_retention() -> None:
    store, publisher = FakeStore(), FakePublisher()
    recorder = Recorder(
        store, FakeTable(), publisher, events_topic="payment.events", window=window(12)
    )
    old = PaymentRecord.model_validate(values())
    good = PaymentRecord.model_validate(
        values(reference_number="NEW-1", payment_date=datetime.now(UTC) - DAY)
    )
    report = await recorder.handle(
        [Incoming(b"OLD-1", encode_record(old)), Incoming(b"NEW-1", encode_record(good))]
    )
    assert [(d.reference_number, d.outcome) for d in report.decisions] == [("NEW-1", "created")]
    assert list(store.rows) == ["NEW-1"]
    [letter] = [decode_dead_letter(value) for _, value in publisher.topics["payment.intake.dlq"]]
    assert (letter.reason, letter.reference_number) == ("beyond_retention", "OLD-1")
    assert json.loads(letter.model_dump_json())["details"][0]["field"] == "payment_date"


def test_the_window_does_its_month_arithmetic_once_a_day(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import months

    months.oldest_kept_on.cache_clear()
    asked: list[date] = []
    cutoff = months.retention_cutoff

    def counted(today: date, retention_months: int) -> date:
        asked.append(today)
        return cutoff(today, retention_months)

    monkeypatch.setattr(months, "retention_cutoff", counted)
    kept = window(retention_months=12)
    morning = datetime(2026, 11, 24, 1, tzinfo=UTC)
    answers = [
        kept.earliest_at(morning + timedelta(minutes=minute), recording=recording)
        for minute in range(0, 600, 7)
        for recording in (False, True)
    ]
    # One day, two margins: two answers, each worked out once, each the uncached one.
    assert len(asked) == 2
    assert set(answers) == {
        datetime.combine(cutoff(day, 12), datetime.min.time(), UTC)
        for day in ((morning + ACCEPTING_MARGIN).date(), (morning + RECORDING_MARGIN).date())
    }
    later = morning + timedelta(days=1)
    kept.check(datetime(2026, 11, 1, tzinfo=UTC), later)
    assert len(asked) == 3  # a new day is worked out again
