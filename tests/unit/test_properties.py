"""Property tests (hypothesis): whatever arrives, a record or a clear refusal, never a crash.

The webhook parsers (every channel), the staging row check and the intake codec
get odd Unicode references, huge, negative, NaN and string amounts, duplicate
JSON keys and deep metadata. Each must end in a valid record, or a 400/422 with
field errors (webhooks), a ValidationError (staging) or an UndecodableRecord /
ValidationError (intake), which the pipeline turns into a dead letter. A record
that is accepted must also survive the trip through the intake topic unchanged:
that is what the record agent reads.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.channels import CHANNELS, GENERIC, Channel
from app.codecs import decode_record, encode_record
from app.exceptions import UndecodableRecord
from app.models import DateWindow, PaymentRecord
from app.staging import ROW_COLUMNS, record_from_row
from app.webhooks import Rejected, parse_body, record_for

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
