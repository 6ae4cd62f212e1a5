"""Property tests (hypothesis): whatever arrives, a record or a clear refusal, never a crash.

The webhook parsers (every channel), the staging row check and the intake codec
get odd Unicode references, huge, negative, NaN and string amounts, duplicate
JSON keys and deep metadata. Each must end in a valid record, or a 400/422 with
field errors (webhooks), a ValidationError (staging) or an UndecodableRecord /
ValidationError (intake), which the pipeline turns into a dead letter. A record
that is accepted must also survive the trip through the intake topic unchanged:
that is what the record agent reads.

Then identity: two inputs the service treats as one payment (NFC or NFD text, padding,
amount spellings, one instant in two offsets, a staging row and a webhook) share a
fingerprint, and two it treats as different (another amount, another currency) never do.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.exceptions import UndecodableRecord
from app.intake.channels import CHANNELS, GENERIC, Channel
from app.intake.staging import ROW_COLUMNS, record_from_row
from app.intake.webhook_body import Rejected, parse_body, record_for
from app.kafka.codecs import decode_record, encode_record
from app.models import DateWindow, PaymentRecord

WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))
NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)
CHANNEL_LIST = [GENERIC, *CHANNELS.values()]

odd_text = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()),  # surrogates, controls, RTL marks
    max_size=300,
)
amounts = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=None),
    st.sampled_from(["1e400", "-0", "0.001", "NaN", "Infinity", "1,000.00", "", " 12.50 "]),
    odd_text,
    st.none(),
    st.booleans(),
)
dates = st.one_of(
    st.dates().map(date.isoformat),
    st.datetimes(timezones=st.timezones()).map(datetime.isoformat),
    st.sampled_from(["2026-02-30", "2026-11-27T25:00:00", "0000-01-01", "9999-12-31", "yesterday"]),
    odd_text,
    st.integers(),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), odd_text
)
metadata = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(odd_text, inner, max_size=4)
    ),
    max_leaves=30,
)


def deep(levels: int) -> str:
    """Metadata nested ``levels`` deep, as JSON text (json.dumps itself stops near 1,000)."""
    return '{"next": [' * levels + '"bottom"' + "]}" * levels


bodies = st.fixed_dictionaries(
    {},
    optional={
        "reference_number": st.one_of(odd_text, st.integers(), st.none()),
        "loan_account_number": st.one_of(odd_text, st.integers()),
        "cif": st.one_of(odd_text, st.integers()),
        "amount": amounts,
        "amount_minor": amounts,
        "payment_date": dates,
        "captured_at": dates,
        "value_date": dates,
        "payment_channel": st.one_of(odd_text, st.none()),
        "metadata": metadata,
        "id": odd_text,
        "end_to_end_id": odd_text,
        "currency": st.sampled_from(["USD", "VND", "JPY", "usd", "XXX", ""]),
        "extra": metadata,
    },
)


def serialise(body: dict[str, Any]) -> bytes:
    """As a sender might: surrogates escaped, NaN and Infinity as JavaScript writes them."""
    return json.dumps(body, default=str, allow_nan=True).encode()


def accept(channel: Channel, raw: bytes) -> PaymentRecord | Rejected:
    try:
        return record_for(
            channel, parse_body(raw), webhook_id="msg_1", received_at=NOW, window=WINDOW
        )
    except Rejected as rejected:
        return rejected


def assert_travels(record: PaymentRecord) -> None:
    """What the record agent will read back from the intake is the same payment."""
    again = decode_record(encode_record(record), WINDOW)
    assert again.fingerprint == record.fingerprint
    assert again.payment_id == record.payment_id
    assert again.amount > 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=st.sampled_from(CHANNEL_LIST), body=bodies)
def test_a_webhook_body_is_a_record_or_a_4xx_with_reasons(
    channel: Channel, body: dict[str, Any]
) -> None:
    outcome = accept(channel, serialise(body))
    if isinstance(outcome, Rejected):
        assert outcome.status in (400, 422)
        answer = json.loads(json.dumps(outcome.body()))
        assert answer["error"]
        assert answer["message"]
        if outcome.status == 422:
            assert answer["errors"], answer
    else:
        assert_travels(outcome)


@settings(deadline=None)
@given(levels=st.integers(min_value=0, max_value=3000))
@example(levels=100_000)
def test_deep_metadata_is_a_record_or_a_4xx(levels: int) -> None:
    raw = (
        '{"reference_number": "DEEP-1", "loan_account_number": "LN1", "cif": "C1",'
        f' "amount": 10, "payment_date": "2026-11-27", "metadata": {deep(levels)}}}'
    ).encode()
    outcome = accept(GENERIC, raw)
    if isinstance(outcome, Rejected):
        assert outcome.status in (400, 422)
    else:
        assert_travels(outcome)


@given(
    first=odd_text,
    second=odd_text,
    key=st.sampled_from(["reference_number", "amount", "metadata", "cif"]),
)
def test_a_duplicate_json_key_is_refused_whatever_its_values(
    first: str, second: str, key: str
) -> None:
    raw = (
        '{"reference_number": "R-1", "loan_account_number": "LN1", "cif": "C1", "amount": 10,'
        f' "payment_date": "2026-11-27", {json.dumps(key)}: {json.dumps(first)},'
        f" {json.dumps(key)}: {json.dumps(second)}}}"
    ).encode()
    outcome = accept(GENERIC, raw)
    assert isinstance(outcome, Rejected)
    assert (outcome.status, outcome.error) == (400, "invalid_json")


@given(raw=st.binary(max_size=500))
@example(raw=b"[" * 100_000)
@example(raw=b'{"amount": NaN}')
@example(raw=b"\xff\xfe{}")
def test_any_bytes_are_json_or_a_400(raw: bytes) -> None:
    outcome = accept(GENERIC, raw)
    assert isinstance(outcome, PaymentRecord | Rejected)
    if isinstance(outcome, Rejected):
        assert outcome.status in (400, 422)


@settings(max_examples=200, deadline=None)
@given(
    reference=odd_text,
    account=odd_text,
    cif=odd_text,
    amount=st.one_of(st.decimals(allow_nan=True, allow_infinity=True), st.integers()),
    # payment_staging.payment_date is a TIMESTAMP: asyncpg hands it over naive (UTC).
    when=st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),  # noqa: DTZ001
    channel=st.one_of(odd_text, st.none()),
    meta=st.one_of(st.none(), metadata.map(lambda value: json.dumps(value, default=str))),
)
def test_a_staging_row_is_a_record_or_a_validation_error(
    reference: str,
    account: str,
    cif: str,
    amount: Decimal | int,
    when: datetime,
    channel: str | None,
    meta: str | None,
) -> None:
    values = (1, reference, account, cif, amount, when, channel, meta)
    row = dict(zip(ROW_COLUMNS, values, strict=True))
    try:
        record = record_from_row(row, WINDOW, NOW)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        assert_travels(record)
        return
    assert errors  # each refusal names what is wrong


@given(raw=st.one_of(st.binary(max_size=300), bodies.map(serialise)))
def test_an_intake_value_is_a_record_or_a_dead_letter_reason(raw: bytes) -> None:
    try:
        record = decode_record(raw, WINDOW)
    except (UndecodableRecord, ValidationError):
        return
    assert_travels(record)


# Invariants of identity: whatever spelling a door receives, one payment has one
# fingerprint (a repeat is a duplicate), and two payments never share one (the second
# is a conflict, never silently taken for the first).

#: Text a sender may write for one reference, account or cif: letters with accents that
#: have a composed and a decomposed spelling, Hangul syllables, digits and punctuation.
identity_text = st.text(
    alphabet=st.sampled_from([*"ABCxyz019-_/.", "é", "ñ", "Å", "ü", "ệ", "가", "Ǻ"]),
    min_size=1,
    max_size=20,
)
#: Amounts with at most 2 places, below 10^13, positive.
money = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999999999.99"), places=2)
#: Currencies whose minor unit allows 2 places (the amounts above fit them all).
two_place_currencies = st.sampled_from(["USD", "EUR", "KWD", "BHD", "CLF", "UYW", "GBP", "CHF"])
instants = st.datetimes(
    min_value=datetime(2000, 1, 2),  # noqa: DTZ001
    max_value=datetime(2026, 11, 27),  # noqa: DTZ001
    timezones=st.just(UTC),
)


def spelled(text: str, form: str, pad: str) -> str:
    """``text`` in Unicode normalization ``form``, with ``pad`` around it."""
    return f"{pad}{unicodedata.normalize(form, text)}{pad}"


def amount_spelling(amount: Decimal, style: int) -> str:
    """The JSON text of ``amount`` as a sender might write it: a number or a string."""
    return [
        f"{amount:.2f}",  # 1500.50
        f"{amount:f}",  # 1500.5 when the places allow
        f'"{amount:.2f}"',  # "1500.50"
        f'"{amount:.4f}"',  # "1500.5000"
        f'" {amount:.2f} "',  # " 1500.50 "
    ][style]


def generic_raw(fields: dict[str, str], amount: str) -> bytes:
    """A generic body whose amount is the JSON text ``amount`` (kept exactly as written)."""
    body = json.dumps({**fields, "amount": "AMOUNT"}).replace('"AMOUNT"', amount)
    return body.encode()


@settings(max_examples=150, deadline=None)
@given(
    reference=identity_text,
    account=identity_text,
    cif=identity_text,
    amount=money,
    when=instants,
    offsets=st.tuples(st.timezones(), st.timezones()),
    forms=st.tuples(*[st.sampled_from(["NFC", "NFD"])] * 6),
    pads=st.tuples(st.sampled_from(["", " ", "\t"]), st.sampled_from(["", "  "])),
    styles=st.tuples(st.integers(0, 4), st.integers(0, 4)),
    currency=st.one_of(st.none(), two_place_currencies),
)
def test_one_payment_has_one_fingerprint_however_it_is_spelled(
    reference: str,
    account: str,
    cif: str,
    amount: Decimal,
    when: datetime,
    offsets: tuple[Any, Any],
    forms: tuple[str, ...],
    pads: tuple[str, str],
    styles: tuple[int, int],
    currency: str | None,
) -> None:
    records = []
    for side in (0, 1):
        fields = {
            "reference_number": spelled(reference, forms[side * 3], pads[side]),
            "loan_account_number": spelled(account[:18], forms[side * 3 + 1], ""),
            "cif": spelled(cif[:18], forms[side * 3 + 2], pads[side]),
            "payment_date": when.astimezone(offsets[side]).isoformat(),
        }
        if currency is not None:
            fields["currency"] = currency
        outcome = accept(GENERIC, generic_raw(fields, amount_spelling(amount, styles[side])))
        assert isinstance(outcome, PaymentRecord), outcome
        records.append(outcome)
    first, second = records
    assert first.fingerprint == second.fingerprint
    assert first.payment_id == second.payment_id
    # and the record agent reads either back as the same payment
    assert decode_record(encode_record(second), WINDOW).fingerprint == first.fingerprint


@settings(max_examples=100, deadline=None)
@given(
    reference=identity_text,
    amount=money,
    when=instants,
    form=st.sampled_from(["NFC", "NFD"]),
    channel=st.one_of(st.none(), st.sampled_from(["branch_cash", "mobile", "Caf\u00e9"])),
)
def test_a_staging_row_and_a_generic_body_of_one_payment_share_a_fingerprint(
    reference: str, amount: Decimal, when: datetime, form: str, channel: str | None
) -> None:
    row = dict(
        zip(
            ROW_COLUMNS,
            (
                1,
                unicodedata.normalize(form, reference),
                "LN1",
                "C1",
                amount,
                when.replace(tzinfo=None),  # a TIMESTAMP column: naive UTC
                channel and unicodedata.normalize(form, channel),
                None,
            ),
            strict=True,
        )
    )
    staged = record_from_row(row, WINDOW, NOW)
    body = {
        "reference_number": unicodedata.normalize("NFC", reference),
        "loan_account_number": "LN1",
        "cif": "C1",
        "payment_date": when.isoformat(),
        "payment_channel": channel,
    }
    sent = accept(GENERIC, generic_raw(body, f"{amount:.2f}"))
    assert isinstance(sent, PaymentRecord), sent
    assert staged.fingerprint == sent.fingerprint


@settings(max_examples=150, deadline=None)
@given(
    reference=identity_text,
    amounts=st.tuples(money, money),
    currencies=st.tuples(st.one_of(st.none(), two_place_currencies), two_place_currencies),
    when=instants,
    differ=st.sampled_from(["amount", "currency", "both"]),
)
def test_two_payments_never_share_a_fingerprint(
    reference: str,
    amounts: tuple[Decimal, Decimal],
    currencies: tuple[str | None, str],
    when: datetime,
    differ: str,
) -> None:
    first_amount, second_amount = amounts
    first_currency, second_currency = currencies
    if differ in ("amount", "both"):
        assume(first_amount != second_amount)
    else:
        second_amount = first_amount
    if differ in ("currency", "both"):
        assume(first_currency != second_currency)
    else:
        second_currency = first_currency  # type: ignore[assignment]  # None is a currency here
    records = []
    for amount, currency in ((first_amount, first_currency), (second_amount, second_currency)):
        fields = {
            "reference_number": reference,
            "loan_account_number": "LN1",
            "cif": "C1",
            "payment_date": when.isoformat(),
        }
        if currency is not None:
            fields["currency"] = currency
        outcome = accept(GENERIC, generic_raw(fields, f"{amount:.2f}"))
        assert isinstance(outcome, PaymentRecord), outcome
        records.append(outcome)
    first, second = records
    assert first.payment_id == second.payment_id  # one reference: the second is decided against it
    assert first.fingerprint != second.fingerprint


@settings(max_examples=100, deadline=None)
@given(
    charge=identity_text,
    # a last digit of 0: 3-decimal currencies then fit the 2 places amounts have
    minor=st.integers(min_value=1, max_value=10**11).map(lambda minor: minor * 10),
    currency=st.sampled_from(["USD", "EUR", "JPY", "VND", "KWD"]),
    when=instants,
    offsets=st.tuples(st.timezones(), st.timezones()),
)
def test_a_card_charge_is_one_payment_per_currency(
    charge: str, minor: int, currency: str, when: datetime, offsets: tuple[Any, Any]
) -> None:
    def capture(currency: str, offset: Any) -> PaymentRecord:
        body = {
            "id": charge,
            "amount_minor": minor,
            "currency": currency,
            "captured_at": when.astimezone(offset).isoformat(),
            "loan_account_number": "LN1",
            "cif": "C1",
        }
        outcome = accept(CHANNELS["card"], serialise(body))
        assert isinstance(outcome, PaymentRecord), outcome
        return outcome

    same = capture(currency, offsets[0]), capture(currency, offsets[1])
    assert same[0].fingerprint == same[1].fingerprint
    # the same charge id and amount_minor in a currency with the same minor unit
    other = {"USD": "EUR", "EUR": "USD", "JPY": "VND", "VND": "JPY", "KWD": "BHD"}[currency]
    elsewhere = capture(other, offsets[0])
    assert elsewhere.amount == same[0].amount
    assert elsewhere.fingerprint != same[0].fingerprint
