"""The dedup policy's whole table of cases (app/recording/dedup.py)."""

from __future__ import annotations

import pytest

from app.models import Outcome, PaymentRecord, fingerprint_of, payment_id_for
from app.recording import dedup
from tests.unit.test_recorder import payment

ORIGINAL = payment("REF-1", "10.00")
SAME = payment("REF-1", "10.00", source="webhook", source_id="wh-9")
OTHER_AMOUNT = payment("REF-1", "10.01")
OTHER_ACCOUNT = payment("REF-1", "10.00", loan_account_number="LA-2")
WITH_CURRENCY = payment("REF-1", "10.00", currency="EUR")
#: The fingerprint of REF-1 as recorded before currency was a field.
LEGACY = fingerprint_of({**WITH_CURRENCY.defining_fields(), "currency": ""})


@pytest.mark.parametrize(
    ("record", "recorded", "first", "expected"),
    [
        # The first carrier of a reference its own batch claimed: created.
        (ORIGINAL, ORIGINAL.fingerprint, True, "created"),
        # A later carrier, or a reference recorded before: the same payment is a duplicate ...
        (SAME, ORIGINAL.fingerprint, False, "duplicate"),
        (ORIGINAL, ORIGINAL.fingerprint, False, "duplicate"),
        # ... whatever the source says, and the metadata is not part of the payment.
        (
            payment("REF-1", "10.00", metadata={"note": "x"}),
            ORIGINAL.fingerprint,
            False,
            "duplicate",
        ),
        # Another payment under the reference is a conflict.
        (OTHER_AMOUNT, ORIGINAL.fingerprint, False, "conflict"),
        (OTHER_ACCOUNT, ORIGINAL.fingerprint, False, "conflict"),
        # A notice naming the currency of a payment recorded without one: the same payment.
        (WITH_CURRENCY, LEGACY, False, "duplicate"),
        # Naming a currency the recorded payment named otherwise: a conflict.
        (WITH_CURRENCY, payment("REF-1", "10.00", currency="USD").fingerprint, False, "conflict"),
        # A record without a currency against one recorded with it: a conflict.
        (ORIGINAL, WITH_CURRENCY.fingerprint, False, "conflict"),
    ],
)
def test_outcome_for_each_case(
    record: PaymentRecord, recorded: str, first: bool, expected: Outcome
) -> None:
    assert dedup.outcome_for(record, recorded, first=first) == expected


def test_a_door_skips_the_agent_only_for_an_exact_repeat() -> None:
    assert dedup.is_exact_repeat(ORIGINAL.fingerprint, ORIGINAL.fingerprint)
    assert not dedup.is_exact_repeat(ORIGINAL.fingerprint, None)  # unknown: the agent decides
    assert not dedup.is_exact_repeat(OTHER_AMOUNT.fingerprint, ORIGINAL.fingerprint)
    # A row's fingerprint alone cannot match a payment recorded before currency was a field ...
    assert not dedup.is_exact_repeat(WITH_CURRENCY.fingerprint, LEGACY)
    # ... a record can: a cache may answer duplicate where the agent would.
    assert dedup.is_duplicate(WITH_CURRENCY, LEGACY)
    assert dedup.is_duplicate(SAME, ORIGINAL.fingerprint)
    assert not dedup.is_duplicate(OTHER_AMOUNT, ORIGINAL.fingerprint)
    assert not dedup.is_duplicate(ORIGINAL, None)


def test_decisions_carry_the_references_own_payment_id_unless_told() -> None:
    made = dedup.duplicate_of(SAME)
    assert (made.reference_number, made.outcome, made.source, made.source_id) == (
        "REF-1",
        "duplicate",
        "webhook",
        "wh-9",
    )
    assert made.payment_id == payment_id_for("REF-1") == SAME.payment_id
    told = payment_id_for("REF-0")
    conflict = dedup.decision(
        "REF-1",
        "conflict",
        source="staging",
        source_id="7",
        channel=None,
        payment_id=told,
        differing_fields=["amount"],
    )
    assert conflict.payment_id == told
    assert conflict.differing_fields == ("amount",)
