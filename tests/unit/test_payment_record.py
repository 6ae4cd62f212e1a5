"""The canonical record: the validation rules both inputs share, fingerprints, ids."""

from __future__ import annotations

import json
import pickle
import random
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from app import models
from app.exceptions import UndecodableRecord
from app.intake.staging import record_from_row
from app.kafka.codecs import (
    decode_event,
    decode_record,
    encode_event,
    encode_event_for,
    encode_record,
)
from app.models import (
    EVENT_ID_NAMESPACE,
    PAYMENT_ID_NAMESPACE,
    DateWindow,
    PaymentRecord,
    PaymentRecordedEvent,
    differing_fields,
    field_errors,
    fingerprint_of,
    naive_utc,
    payment_id_for,
)
from app.recording.payment_store import defining_fields_of

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))


def raw(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "reference_number": "REF-1",
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": "100.50",
        "payment_date": "2026-11-27T10:00:00",
        "payment_channel": "bank_transfer",
        "metadata": {"note": "x"},
        "source": "webhook",
        "source_id": "msg_1",
        "received_at": NOW.isoformat(),
    }
    values.update(changes)
    return values


def record(**changes: Any) -> PaymentRecord:
    return PaymentRecord.model_validate(raw(**changes), context={"window": WINDOW})


def errors_for(**changes: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        record(**changes)
    return {error.field: error.message for error in field_errors(caught.value)}


def test_a_valid_record_is_normalised() -> None:
    payment = record(
        reference_number="  REF-1 ", amount=100.5, payment_date="2026-11-27T12:00:00+02:00"
    )
    assert payment.reference_number == "REF-1"
    assert payment.amount == Decimal("100.50")
    assert str(payment.amount) == "100.50"
    assert payment.payment_date == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reference_number": ""}, "reference_number"),
        ({"reference_number": "   "}, "reference_number"),
        ({"reference_number": "R" * 256}, "reference_number"),
        ({"reference_number": "REF\x00-1"}, "reference_number"),
        ({"reference_number": "REF\n1"}, "reference_number"),
        ({"loan_account_number": "L" * 21}, "loan_account_number"),
        ({"loan_account_number": ""}, "loan_account_number"),
        ({"cif": "C" * 21}, "cif"),
        ({"amount": "0"}, "amount"),
        ({"amount": "-1.00"}, "amount"),
        ({"amount": "1.005"}, "amount"),
        ({"amount": "10000000000000"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "Infinity"}, "amount"),
        ({"payment_date": "1999-12-31T23:59:59"}, "payment_date"),
        ({"payment_date": (datetime.now(UTC) + timedelta(days=2)).isoformat()}, "payment_date"),
        ({"payment_date": "yesterday"}, "payment_date"),
        ({"payment_channel": "c" * 101}, "payment_channel"),
        ({"metadata": [1, 2]}, "metadata"),
        ({"metadata": {"blob": "x" * 17_000}}, "metadata"),
        ({"metadata": {"nul": "a\x00b"}}, "metadata"),
        ({"metadata": {"nan": float("nan")}}, "metadata"),
        ({"metadata": {"deep": [{"x": float("-inf")}]}}, "metadata"),
        ({"source": "email"}, "source"),
    ],
)
def test_each_rule_names_its_field(changes: dict[str, Any], field: str) -> None:
    assert field in errors_for(**changes)


#: Look-alikes of "REF-1" (or of "LA-1", "CIF-1"): format characters (Cf), separators that
#: are not the ASCII space, and other invisible ones.
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u200e",  # left-to-right mark
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\ufeff",  # byte order mark
    "\u00ad",  # soft hyphen
    "\u2060",  # word joiner
    "\U000e0041",  # tag letter A
    "\u00a0",  # no-break space
    "\u3000",  # ideographic space
    "\u2028",  # line separator
    "\u034f",  # combining grapheme joiner
    "\u3164",  # Hangul filler
    "\ufe0f",  # variation selector 16
]


@pytest.mark.parametrize("field", ["reference_number", "loan_account_number", "cif"])
@pytest.mark.parametrize("char", INVISIBLE)
def test_identity_fields_refuse_invisible_characters(field: str, char: str) -> None:
    value = {"reference_number": "REF-1", "loan_account_number": "LA-1", "cif": "CIF-1"}[field]
    message = errors_for(**{field: value[:2] + char + value[2:]})[field]
    assert f"U+{ord(char):04X}" in message


@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\u00a0"])
def test_the_channel_refuses_invisible_characters(char: str) -> None:
    assert "payment_channel" in errors_for(payment_channel=f"ca{char}rd")


@pytest.mark.parametrize(
    "field", ["reference_number", "loan_account_number", "cif", "payment_channel", "source_id"]
)
@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"])
def test_every_text_refuses_control_characters(field: str, char: str) -> None:
    assert errors_for(**{field: f"AB{char}CD"})[field] == "must not contain control characters"


def test_naive_utc_is_astimezone_utc_without_the_zone() -> None:
    for offset in (0, 7, -5, 14, -12):
        for value in (
            datetime(2026, 11, 27, 23, 30, 15, 123456, tzinfo=timezone(timedelta(hours=offset))),
            datetime(2000, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=offset, minutes=30))),
            datetime(9999, 12, 31, 9, 0, tzinfo=timezone(timedelta(hours=offset))),
        ):
            expected = value.astimezone(UTC).replace(tzinfo=None)
            assert naive_utc(value) == expected
            assert naive_utc(value).tzinfo is None
    local = datetime(2026, 11, 27, 10, 0)  # noqa: DTZ001 (naive: read as local time, as astimezone reads it)
    assert naive_utc(local) == local.astimezone(UTC).replace(tzinfo=None)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2026-11-27T10:00:00", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),  # naive: UTC
        ("2026-11-27T10:00:00Z", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
        ("2026-11-27T10:00:00.5+07:00", datetime(2026, 11, 27, 3, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-26T23:30:00-10:30", datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
    ],
)
def test_dates_are_held_in_utc_whatever_the_sender_wrote(written: str, expected: datetime) -> None:
    for made in (
        record(payment_date=written, received_at=written),
        decode_record(json.dumps(raw(payment_date=written, received_at=written)).encode()),
        # A staging row's TIMESTAMP, as asyncpg gives it: a datetime, naive or not.
        record(payment_date=datetime.fromisoformat(written), received_at=written),
    ):
        assert (made.payment_date, made.received_at) == (expected, expected)
        assert made.payment_date.tzinfo is UTC
        assert made.received_at.tzinfo is UTC


def test_a_records_fingerprint_is_the_one_of_its_stored_row() -> None:
    # Postgres holds the payment_date naive in UTC; the record's fingerprint must agree with
    # the one computed back from the row, for any offset and fraction the sender wrote.
    for written in ("2026-11-27T10:00:00+07:00", "2026-11-27T10:00:00.250Z", "2026-11-27T10:00:00"):
        made = record(payment_date=written)
        row = {**made.defining_fields(), "amount": made.amount}
        row["payment_date"] = naive_utc(made.payment_date)
        assert made.fingerprint == fingerprint_of(defining_fields_of(row))


NFD = "Cafe\u0301-\u1100\u1161-A\u030a"  # e + acute, Hangul jamo, A + ring: decomposed
NFC = "Caf\u00e9-\uac00-\u00c5"


def test_identity_fields_are_normalized_to_nfc() -> None:
    decomposed = record(reference_number=NFD, loan_account_number="L\u0301", cif="C\u0327")
    composed = record(reference_number=NFC, loan_account_number="\u0139", cif="\u00c7")
    assert decomposed.reference_number == NFC
    assert (decomposed.loan_account_number, decomposed.cif) == ("\u0139", "\u00c7")
    assert decomposed.fingerprint == composed.fingerprint
    assert decomposed.payment_id == composed.payment_id
    assert record(payment_channel="cafe\u0301").payment_channel == "caf\u00e9"


def test_lengths_count_the_normalized_text() -> None:
    assert len(record(reference_number="e\u0301" * 200).reference_number) == 200


def test_the_intake_normalizes_and_refuses_like_the_webhooks() -> None:
    decoded = decode_record(json.dumps(raw(reference_number=NFD)).encode(), WINDOW)
    assert decoded.reference_number == NFC
    with pytest.raises(ValidationError) as caught:
        decode_record(json.dumps(raw(reference_number="REF\u200b-1")).encode(), WINDOW)
    assert [error.field for error in field_errors(caught.value)] == ["reference_number"]


def staging_row(**changes: Any) -> dict[str, Any]:
    """A payment_staging row as asyncpg hands it over (naive UTC timestamp, JSON text)."""
    row = {**raw(**changes), "id": 7, "payment_date": datetime(2026, 11, 27)}  # noqa: DTZ001
    row["metadata"] = json.dumps(row["metadata"])
    return row


def test_a_staging_row_normalizes_and_refuses_like_the_webhooks() -> None:
    decomposed = record_from_row(staging_row(reference_number=NFD), WINDOW, NOW)
    composed = record_from_row(staging_row(reference_number=NFC), WINDOW, NOW)
    assert decomposed.reference_number == NFC
    assert decomposed.fingerprint == composed.fingerprint
    with pytest.raises(ValidationError) as caught:
        record_from_row(staging_row(cif="CIF\u200e-1"), WINDOW, NOW)
    assert [error.field for error in field_errors(caught.value)] == ["cif"]


@pytest.mark.parametrize(
    "amount",
    ["\uff11\uff15\uff10\uff10", "1_000", "1_000.00", "\u0661\u0662.\u0665\u0660", "1e3", "0x10"],
)
def test_amounts_in_text_are_ascii_digits_only(amount: str) -> None:
    assert "amount" in errors_for(amount=amount)


@pytest.mark.parametrize("amount", ["\uff11\uff15\uff10\uff10", "1_000"])
def test_the_intake_refuses_amounts_beyond_ascii_digits(amount: str) -> None:
    value = json.dumps(raw(amount=amount)).encode()
    with pytest.raises(ValidationError) as caught:
        decode_record(value, WINDOW)
    assert [error.field for error in field_errors(caught.value)] == ["amount"]


@pytest.mark.parametrize("amount", ["\uff11\uff15\uff10\uff10", "1_000"])
def test_a_staging_row_refuses_amounts_beyond_ascii_digits(amount: str) -> None:
    with pytest.raises(ValidationError) as caught:
        record_from_row(staging_row(amount=amount), WINDOW, NOW)
    assert [error.field for error in field_errors(caught.value)] == ["amount"]


def test_metadata_nests_at_most_32_levels() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: Any = "bottom"
        for _ in range(levels - 1):
            value = [value]
        return {"next": value}

    assert record(metadata=nested(32)).metadata == nested(32)
    assert "metadata" in errors_for(metadata=nested(33))
    # what the agent reads back from the intake holds the same metadata
    assert decode_record(encode_record(record(metadata=nested(32)))).metadata == nested(32)


def test_shallow_metadata_is_not_walked_for_its_depth(monkeypatch: pytest.MonkeyPatch) -> None:
    def walked(value: Any) -> int:
        raise AssertionError("walked metadata that cannot nest too deep")

    monkeypatch.setattr(models, "_depth", walked)
    shallow = {"note": "[{" * 5, "list": [[1, 2], {"a": []}]}
    assert record(metadata=shallow).metadata == shallow
    monkeypatch.undo()
    # Brackets inside strings count too: they can only make the walk happen, never skip it.
    brackets = {"note": "[" * 40, "list": [[1, 2]]}
    assert record(metadata=brackets).metadata == brackets


def test_metadata_may_say_nan_and_infinity_in_words() -> None:
    words = {"note": "NaN", "plan": ["Infinity", "-Infinity"]}
    assert record(metadata=words).metadata == words


def test_the_largest_amount_and_the_window_edges_are_accepted() -> None:
    assert record(amount="9999999999999.99").amount == Decimal("9999999999999.99")
    assert record(payment_date="2000-01-01T00:00:00").payment_date.year == 2000
    soon = datetime.now(UTC) + timedelta(hours=23)
    assert record(payment_date=soon.isoformat()).payment_date == soon


def test_without_a_window_only_structure_is_checked() -> None:
    old = PaymentRecord.model_validate(raw(payment_date="1990-01-01T00:00:00"))
    assert old.payment_date.year == 1990


def test_fingerprint_covers_the_defining_fields_and_not_metadata_or_source() -> None:
    base = record()
    assert (
        record(metadata={"other": 1}, source="staging", source_id="9").fingerprint
        == base.fingerprint
    )
    assert record(amount="100.5").fingerprint == base.fingerprint
    assert record(payment_channel="").fingerprint == record(payment_channel=None).fingerprint
    for changes in (
        {"amount": "100.51"},
        {"loan_account_number": "LA-2"},
        {"cif": "CIF-2"},
        {"payment_date": "2026-11-27T10:00:01"},
        {"payment_channel": "card"},
        {"reference_number": "REF-2"},
    ):
        assert record(**changes).fingerprint != base.fingerprint, changes


def test_payments_without_a_currency_keep_the_fingerprints_they_were_stored_with() -> None:
    # Computed by the code before currency was a field: payment_references and the
    # references table hold fingerprints like these.
    assert record().fingerprint == (
        "422edb9337eaa66e7e859bab4565d049c793bf6c5c1f3dc73f94c4ec8707242a"
    )
    assert record(payment_channel=None, metadata={"currency": "USD"}).fingerprint == (
        "f4096d8d723b6367cb5bd7afbe2a4759554922ddd3eb202bdf83d2b1362167ba"
    )


def test_the_currency_tells_payments_apart() -> None:
    usd, eur, none = record(currency="USD"), record(currency="EUR"), record()
    assert len({usd.fingerprint, eur.fingerprint, none.fingerprint}) == 3
    assert record(currency="USD").fingerprint == usd.fingerprint
    assert differing_fields(usd.defining_fields(), eur.defining_fields()) == ["currency"]
    assert differing_fields(none.defining_fields(), usd.defining_fields()) == ["currency"]


@pytest.mark.parametrize(
    ("currency", "amount", "ok"),
    [
        ("JPY", "1500", True),
        ("JPY", "1500.00", True),
        ("JPY", "1500.5", False),
        ("UYI", "10.01", False),
        ("KWD", "1.25", True),
        ("USD", "1.25", True),
        ("CLF", "1.25", True),
    ],
)
def test_the_amount_fits_the_currencys_minor_unit(currency: str, amount: str, ok: bool) -> None:
    if ok:
        assert record(currency=currency, amount=amount).amount == Decimal(amount)
    else:
        assert (
            f"0 decimal places in {currency}"
            in errors_for(currency=currency, amount=amount)["amount"]
        )


@pytest.mark.parametrize("currency", ["XYZ", "usd", "US", "XAU", 840])
def test_a_currency_is_an_iso_4217_payment_currency(currency: Any) -> None:
    assert record(currency="USD").currency == "USD"
    assert "currency" in errors_for(currency=currency)


def test_the_intake_carries_the_currency_and_leaves_it_out_when_there_is_none() -> None:
    usd = record(currency="USD")
    assert decode_record(encode_record(usd)) == usd
    assert json.loads(encode_record(usd))["currency"] == "USD"
    # a record without one is written as before, so a worker not yet upgraded reads it
    assert "currency" not in json.loads(encode_record(record()))
    assert decode_record(encode_record(record())).currency is None


def test_differing_fields_names_what_changed() -> None:
    a = record().defining_fields()
    b = record(amount="1.00", cif="CIF-9").defining_fields()
    assert differing_fields(a, b) == ["cif", "amount"]


def test_payment_and_event_ids_are_stable_per_reference() -> None:
    assert record().payment_id == record(amount="5.00").payment_id == payment_id_for("REF-1")
    assert record().event_id == record(source="staging").event_id
    assert record().payment_id != record(reference_number="REF-2").payment_id


def test_ids_are_the_standard_librarys_uuid5() -> None:
    from app.models import uuid5

    rng = random.Random(18)  # noqa: S311 (test data, not secrets)
    names = ["", "REF-1", "réf-ü", "支付-1", "\U0001f4b3", " spaced "]
    names += [
        "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(40)))
        for _ in range(5_000)
    ]
    for name in names:
        for namespace in (PAYMENT_ID_NAMESPACE, EVENT_ID_NAMESPACE, uuid.NAMESPACE_DNS):
            made = uuid5(namespace, name)
            assert made == uuid.uuid5(namespace, name)
            assert (made.version, made.variant) == (5, uuid.RFC_4122)
    assert record().payment_id == uuid.uuid5(PAYMENT_ID_NAMESPACE, "REF-1")
    assert record().event_id == uuid.uuid5(EVENT_ID_NAMESPACE, "REF-1")


def test_ids_and_fingerprint_are_computed_once_and_stay_out_of_the_record() -> None:
    from app.models import computed_once

    payment = record()
    first = (payment.payment_id, payment.event_id, payment.fingerprint)
    for name in ("payment_id", "event_id", "fingerprint"):
        assert isinstance(PaymentRecord.__dict__[name], computed_once)
        assert payment.__dict__[name] is getattr(payment, name)  # kept, not computed again
    assert (payment.payment_id, payment.event_id, payment.fingerprint) == first
    # Not fields: the record equals a fresh one, dumps and pickles as before.
    assert payment == record()
    assert set(payment.model_dump()) == set(PaymentRecord.model_fields)
    assert pickle.loads(pickle.dumps(payment)).fingerprint  # noqa: S301 (our own bytes) == payment.fingerprint
    with pytest.raises(ValidationError):
        payment.reference_number = "REF-2"  # type: ignore[misc] (frozen, as before)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"currency": "USD", "amount": "1.50"},
        {"currency": "JPY", "amount": "1500"},
        {"payment_channel": None, "amount": "0.01"},
        {"payment_date": "2026-11-27T23:30:00-05:00", "reference_number": "réf-ü 1"},
        {"amount": "9999999999999.99", "cif": "é" * 20},
    ],
)
def test_the_fingerprint_is_the_defining_fields_hashed_without_building_them(
    changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    payment = record(**changes)
    expected = models.fingerprint_of(payment.defining_fields())

    def built(self: PaymentRecord) -> dict[str, str]:
        raise AssertionError("the fingerprint built the dict of defining fields")

    monkeypatch.setattr(PaymentRecord, "defining_fields", built)
    assert payment.fingerprint == expected


def test_intake_codec_round_trips_decimals_exactly() -> None:
    payment = record(amount="1234567890123.45")
    decoded = decode_record(encode_record(payment))
    assert decoded == payment
    assert decoded.amount == Decimal("1234567890123.45")


@pytest.mark.parametrize("value", [b"", b"not json", b"[1,2]", b"\xff\xfe"])
def test_undecodable_intake_values_are_told_apart(value: bytes) -> None:
    with pytest.raises(UndecodableRecord):
        decode_record(value)


def test_event_has_the_plan_shape_and_an_exact_number() -> None:
    payment = record(amount="1234567890123.45")
    event = PaymentRecordedEvent.for_record(payment, NOW)
    body = encode_event(event)
    assert b'"amount":1234567890123.45' in body
    assert b'"event_type":"payment.recorded"' in body
    assert b'"schema_version":1' in body
    assert b'"payment_date":"2026-11-27T10:00:00Z"' in body
    assert b'"currency":null' in body
    decoded = decode_event(body)
    assert decoded.payment.amount == Decimal("1234567890123.45")
    assert decoded.event_id == payment.event_id
    assert decoded.payment.id == payment.payment_id


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"amount": "0.10", "payment_channel": None, "metadata": {}},
        {"amount": "9999999999999.99", "metadata": {"ünï": ["c", 1.5, None, {"deep": True}]}},
        {"reference_number": "RÉF/✓ 1", "payment_date": "2026-11-27T10:00:00.123456+05:30"},
        {"currency": "VND", "amount": "1500000"},
    ],
)
def test_the_fast_event_encoding_equals_the_model(changes: dict[str, Any]) -> None:
    payment = record(**changes)
    model = encode_event(PaymentRecordedEvent.for_record(payment, NOW))
    fast = encode_event_for(payment, NOW)
    assert json.loads(fast) == json.loads(model)
    assert decode_event(fast) == decode_event(model)
    assert decode_event(fast).payment.currency == payment.currency


def test_the_event_names_the_currency_and_stays_schema_version_1() -> None:
    body = json.loads(encode_event_for(record(currency="VND", amount="1500000"), NOW))
    assert (body["schema_version"], body["payment"]["currency"]) == (1, "VND")
    # an event written before currency was a field still decodes
    del body["payment"]["currency"]
    assert decode_event(json.dumps(body).encode()).payment.currency is None
