"""Webhook bodies → canonical records, and Standard Webhooks signatures (offline)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.intake.channels import CHANNELS, GENERIC, Channel
from app.intake.signatures import SIGNATURE_HEADERS, Verifier, signature_headers
from app.intake.webhook_body import Rejected, parse_body, record_for
from app.models import CHANNEL_ENDPOINTS, GENERIC_ENDPOINT, DateWindow, PaymentRecord
from app.settings import Settings
from tests.webhook_client import signed, svix_signed

NOW = datetime.now(UTC)
WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))
DOCS = Path(__file__).parents[2] / "docs" / "webhooks.md"


def documented_example(channel: str) -> dict[str, Any]:
    """The example body docs/webhooks.md shows for ``channel``."""
    match = re.search(rf"```json {channel}\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert match is not None, f"docs/webhooks.md has no example for {channel}"
    return dict(json.loads(match.group(1)))


def convert(channel: Channel, body: Any) -> PaymentRecord:
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    return record_for(channel, parse_body(raw), webhook_id="msg_1", received_at=NOW, window=WINDOW)


def rejection(channel: Channel, body: Any) -> Rejected:
    with pytest.raises(Rejected) as caught:
        convert(channel, body)
    return caught.value


def fields(rejected: Rejected) -> list[str]:
    return [error.field for error in rejected.errors]


def test_the_documented_examples_become_records() -> None:
    generic = convert(GENERIC, documented_example("generic"))
    assert generic.amount == Decimal("1500000.50")
    assert (generic.source, generic.source_id) == ("webhook", "msg_1")

    transfer = convert(CHANNELS["bank_transfer"], documented_example("bank_transfer"))
    assert transfer.reference_number == "E2E-20261127-000123"
    assert transfer.amount == Decimal("1500000.00")
    assert transfer.payment_date == datetime(2026, 11, 27, tzinfo=UTC)
    assert transfer.payment_channel == "bank_transfer"
    assert transfer.metadata["currency"] == "VND"

    card = convert(CHANNELS["card"], documented_example("card"))
    assert card.reference_number == "ch_3QxYz2026A"
    assert card.amount == Decimal("250000")  # VND has no minor unit
    assert card.payment_date == datetime(2026, 11, 27, 9, 45, 10, tzinfo=UTC)
    assert card.metadata["card"] == {"brand": "visa", "last4": "4242"}


def test_a_json_number_amount_stays_exact() -> None:
    body = documented_example("generic") | {"amount": 0.1}
    raw = json.dumps(body).replace('"amount": 0.1', '"amount": 100.10').encode()
    assert convert(GENERIC, raw).amount == Decimal("100.10")


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [
        (12345, "USD", Decimal("123.45")),
        (500, "JPY", Decimal("500")),
        (1230, "KWD", Decimal("1.23")),
    ],
)
def test_card_minor_units_follow_the_currency(minor: int, currency: str, amount: Decimal) -> None:
    body = documented_example("card") | {"amount_minor": minor, "currency": currency}
    assert convert(CHANNELS["card"], body).amount == amount


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [
        (10000, "CLF", Decimal("1")),  # 4 decimals: the old table's default made it 100.00
        (12300, "UYW", Decimal("1.23")),
        (500, "UYI", Decimal("500")),  # no minor unit: the old default made it 5.00
        (12345, "BOV", Decimal("123.45")),
    ],
)
def test_card_exponents_come_from_iso_4217(minor: int, currency: str, amount: Decimal) -> None:
    body = documented_example("card") | {"amount_minor": minor, "currency": currency}
    assert convert(CHANNELS["card"], body).amount == amount


def test_one_charge_id_and_amount_in_two_currencies_are_two_payments() -> None:
    usd = convert(CHANNELS["card"], documented_example("card") | {"currency": "USD"})
    eur = convert(CHANNELS["card"], documented_example("card") | {"currency": "EUR"})
    assert (usd.currency, eur.currency) == ("USD", "EUR")
    assert usd.amount == eur.amount
    assert usd.fingerprint != eur.fingerprint
    assert usd.payment_id == eur.payment_id  # one reference: the second is a conflict
    transfer = convert(CHANNELS["bank_transfer"], documented_example("bank_transfer"))
    assert transfer.currency == "VND"
    assert transfer.metadata["currency"] == "VND"  # kept where consumers read it before


def test_the_generic_body_may_name_a_currency() -> None:
    body = documented_example("generic")
    assert convert(GENERIC, body).currency is None
    assert convert(GENERIC, body | {"currency": "USD"}).currency == "USD"
    assert convert(GENERIC, body | {"currency": "USD"}).fingerprint != (
        convert(GENERIC, body).fingerprint
    )
    assert fields(rejection(GENERIC, body | {"currency": "usd"})) == ["currency"]
    assert fields(rejection(GENERIC, body | {"currency": "XYZ"})) == ["currency"]
    # 1500000.50 has a fraction the yen does not
    assert fields(rejection(GENERIC, body | {"currency": "JPY"})) == ["amount"]


def test_a_bank_transfer_amount_fits_its_currency() -> None:
    body = documented_example("bank_transfer") | {"amount": "1500000.50"}  # VND has no minor unit
    assert fields(rejection(CHANNELS["bank_transfer"], body)) == ["amount"]


def test_a_fourth_decimal_is_refused_not_rounded() -> None:
    body = documented_example("card") | {"amount_minor": 12345, "currency": "CLF"}  # 1.2345
    assert fields(rejection(CHANNELS["card"], body)) == ["amount_minor"]


@pytest.mark.parametrize("channel", ["card", "bank_transfer"])
@pytest.mark.parametrize("currency", ["XYZ", "ABC", "XAU", "XXX", "XTS"])
def test_unknown_and_non_payment_currencies_are_refused(channel: str, currency: str) -> None:
    rejected = rejection(CHANNELS[channel], documented_example(channel) | {"currency": currency})
    assert (rejected.status, fields(rejected)) == (422, ["currency"])
    assert "ISO 4217" in rejected.errors[0].message


def test_a_third_decimal_is_refused_under_the_senders_field_name() -> None:
    body = documented_example("card") | {"amount_minor": 1234, "currency": "BHD"}  # 1.234
    assert fields(rejection(CHANNELS["card"], body)) == ["amount_minor"]


@pytest.mark.parametrize(
    "captured_at", ["2026-11-27T09:45:10", "2026-11-27T09:45:10.5", "2026-11-27"]
)
def test_captured_at_without_an_offset_is_refused(captured_at: str) -> None:
    body = documented_example("card") | {"captured_at": captured_at}
    rejected = rejection(CHANNELS["card"], body)
    assert (rejected.status, fields(rejected)) == (422, ["captured_at"])
    assert "timezone" in rejected.errors[0].message


def test_captured_at_with_any_offset_is_stored_in_utc() -> None:
    for captured_at in ("2026-11-27T09:45:10Z", "2026-11-27T04:45:10-05:00"):
        body = documented_example("card") | {"captured_at": captured_at}
        assert convert(CHANNELS["card"], body).payment_date == datetime(
            2026, 11, 27, 9, 45, 10, tzinfo=UTC
        )


def test_bank_transfer_amounts_must_be_decimal_strings() -> None:
    body = documented_example("bank_transfer") | {"amount": 1500000.0}
    rejected = rejection(CHANNELS["bank_transfer"], body)
    assert (rejected.status, fields(rejected)) == (422, ["amount"])


@pytest.mark.parametrize(
    "amount", ["\uff11\uff15\uff10\uff10", "1_000", "\u0661\u0665\u0660\u0660.50", "1500\u00a0000"]
)
def test_generic_amounts_are_ascii_digits_only(amount: str) -> None:
    rejected = rejection(GENERIC, documented_example("generic") | {"amount": amount})
    assert (rejected.status, fields(rejected)) == (422, ["amount"])
    assert "ASCII digits" in rejected.errors[0].message


@pytest.mark.parametrize(
    "amount", ["\uff11\uff15\uff10\uff10.00", "\u0661\u0665\u0660\u0660", "1500000.\uff150"]
)
def test_bank_transfer_amounts_are_ascii_digits_only(amount: str) -> None:
    body = documented_example("bank_transfer") | {"amount": amount}
    rejected = rejection(CHANNELS["bank_transfer"], body)
    assert (rejected.status, fields(rejected)) == (422, ["amount"])


def test_plain_amount_spellings_still_count() -> None:
    for amount in ("1500000.50", " 1500000.5 ", 1500000.5, 1500000):
        body = documented_example("generic") | {"amount": amount}
        assert convert(GENERIC, body).amount in (Decimal("1500000.50"), Decimal("1500000"))


@pytest.mark.parametrize(
    ("channel", "field", "changes"),
    [
        ("generic", "reference_number", {"reference_number": "PAY-2026\u200b-000123"}),
        ("generic", "cif", {"cif": "\u202eC000987"}),
        ("generic", "payment_channel", {"payment_channel": "branch\u200dcash"}),
        ("bank_transfer", "end_to_end_id", {"end_to_end_id": "E2E-2026\u200e1127"}),
        ("bank_transfer", "loan_account_number", {"loan_account_number": "LN0001\ufeff234"}),
        ("card", "id", {"id": "ch_3QxYz\u20602026A"}),
        ("card", "cif", {"cif": "C000\u00a0987"}),
    ],
)
def test_invisible_characters_are_refused_under_the_senders_field_name(
    channel: str, field: str, changes: dict[str, str]
) -> None:
    door = GENERIC if channel == "generic" else CHANNELS[channel]
    rejected = rejection(door, documented_example(channel) | changes)
    assert (rejected.status, rejected.error, fields(rejected)) == (422, "invalid_payment", [field])
    assert "invisible" in rejected.errors[0].message


@pytest.mark.parametrize(
    ("channel", "field"),
    [("generic", "reference_number"), ("bank_transfer", "end_to_end_id"), ("card", "id")],
)
def test_nfd_and_nfc_references_are_one_payment(channel: str, field: str) -> None:
    door = GENERIC if channel == "generic" else CHANNELS[channel]
    decomposed = convert(door, documented_example(channel) | {field: "PAGO-Nin\u0303o-1"})
    composed = convert(door, documented_example(channel) | {field: "PAGO-Ni\u00f1o-1"})
    assert decomposed.reference_number == composed.reference_number == "PAGO-Ni\u00f1o-1"
    assert decomposed.fingerprint == composed.fingerprint
    assert decomposed.payment_id == composed.payment_id


def test_payment_rules_apply_to_every_channel_with_the_bodys_field_names() -> None:
    body = documented_example("bank_transfer") | {"end_to_end_id": "  ", "value_date": "1999-12-31"}
    rejected = rejection(CHANNELS["bank_transfer"], body)
    assert (rejected.status, rejected.error) == (422, "invalid_payment")
    assert sorted(fields(rejected)) == ["end_to_end_id", "value_date"]


def test_unknown_fields_are_refused() -> None:
    rejected = rejection(GENERIC, documented_example("generic") | {"amout": 1})
    assert (rejected.status, fields(rejected)) == (422, ["amout"])
    # and a sender cannot choose the record's source
    assert fields(rejection(GENERIC, documented_example("generic") | {"source": "staging"})) == [
        "source"
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"amount": NaN}',
        b'{"amount": 1, "amount": 2}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_bodies_that_are_not_plain_json_get_400(raw: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        parse_body(raw)
    assert (caught.value.status, caught.value.error) == (400, "invalid_json")


def test_a_body_that_is_not_an_object_gets_422() -> None:
    assert rejection(GENERIC, [1, 2]).status == 422


SECRET_A = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_" + "dGhlIG5ldyBzZWNyZXQgYWZ0ZXIgcm90YXRpb24="
SECRET_CARD = "whsec_" + "Y2FyZCBwcm9jZXNzb3IgY2hhbm5lbCBzZWNyZXQ="


@pytest.fixture
def verifier() -> Verifier:
    settings = Settings(
        webhook_secret=f"{SECRET_A},{SECRET_B}",  # type: ignore[arg-type]  # parsed from text
        webhook_channel_secrets={"card": [SECRET_CARD]},  # type: ignore[dict-item]
    )
    return Verifier(settings)


BODY = b'{"reference_number": "R1"}'


def test_either_secret_of_a_rotation_verifies(verifier: Verifier) -> None:
    assert verifier.verify("generic", BODY, signed(SECRET_A, BODY))
    assert verifier.verify("generic", BODY, signed(SECRET_B, BODY))


def test_a_channel_secret_replaces_the_default_for_that_channel(verifier: Verifier) -> None:
    assert verifier.verify("card", BODY, signed(SECRET_CARD, BODY))
    assert not verifier.verify("card", BODY, signed(SECRET_A, BODY))
    assert verifier.verify("bank_transfer", BODY, signed(SECRET_A, BODY))


def test_tampering_and_wrong_secrets_are_refused(verifier: Verifier) -> None:
    headers = signed(SECRET_A, BODY)
    flipped = bytes([BODY[0] ^ 0x01]) + BODY[1:]
    assert not verifier.verify("generic", flipped, headers)
    assert not verifier.verify("generic", BODY, signed(SECRET_CARD, BODY))
    assert not verifier.verify("generic", BODY, headers | {"webhook-id": "msg_2"})
    assert not verifier.verify("generic", BODY, headers | {"webhook-signature": "v1,junk"})
    assert not verifier.verify("generic", BODY, headers | {"webhook-signature": "nonsense"})
    assert not verifier.verify("generic", b"\xff" + BODY, headers)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        assert not verifier.verify("generic", BODY, {k: v for k, v in headers.items() if k != name})


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-299, True), (299, True), (-301, False), (301, False)]
)
def test_timestamps_are_accepted_within_five_minutes(
    verifier: Verifier, offset: int, accepted: bool
) -> None:
    assert verifier.verify("generic", BODY, signed(SECRET_A, BODY, offset=offset)) is accepted


def test_a_junk_timestamp_is_refused(verifier: Verifier) -> None:
    headers = signed(SECRET_A, BODY) | {"webhook-timestamp": "yesterday"}
    assert not verifier.verify("generic", BODY, headers)


def test_without_any_secret_everything_is_refused() -> None:
    assert not Verifier(Settings()).verify("generic", BODY, signed(SECRET_A, BODY))


def test_every_refusal_the_agent_can_answer_is_counted_under_its_own_outcome() -> None:
    from typing import get_args

    from app.models import DeadLetter, DeadLetterReason
    from app.recording.decisions import Answer
    from web.webhooks import KNOWN_OUTCOMES

    for reason in get_args(DeadLetterReason):
        letter = DeadLetter(
            reason=reason, source="webhook", source_id="w", failed_at=datetime.now(UTC)
        )
        assert Answer.refused(letter).body["error"] in KNOWN_OUTCOMES, reason


def test_every_channel_has_its_endpoint() -> None:
    """app.models names the endpoints (the decisions and audit trail key on them)."""
    assert set(CHANNELS) == CHANNEL_ENDPOINTS
    assert GENERIC.name == GENERIC_ENDPOINT


def test_svix_headers_verify_and_the_webhook_family_decides_when_both_come(
    verifier: Verifier,
) -> None:
    svix = svix_signed(SECRET_A, BODY)
    assert verifier.verify("generic", BODY, svix)
    ours = signed(SECRET_A, BODY)
    assert verifier.verify("generic", BODY, svix | {"svix-signature": "v1,junk"} | ours)
    assert not verifier.verify("generic", BODY, svix | ours | {"webhook-signature": "v1,junk"})
    # A lone webhook-* header is enough to choose that family.
    assert not verifier.verify("generic", BODY, svix | {"webhook-id": "msg_1"})


def test_signature_headers_name_the_family_they_came_in() -> None:
    svix = svix_signed(SECRET_A, BODY, msg_id="from-svix")
    assert signature_headers(svix)["webhook-id"] == "from-svix"
    assert signature_headers({}) == dict.fromkeys(SIGNATURE_HEADERS, "")
