"""reconcile's comparison of an event with its row (offline half)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from app.ops.reconcile import content_hash


def digest(**changes: Any) -> int:
    fields: dict[str, Any] = {
        "payment_id": "6f1f2d0e-5b8a-4c4e-9a51-3d0c6c1b7a10",
        "reference": "REF-1",
        "account": "LA-1",
        "cif": "CIF-1",
        "amount": Decimal("150.25"),
        "payment_date": "2026-11-27T09:45:10Z",
        "channel": "card",
        "source": "webhook",
        "metadata": {"currency": "USD"},
        "currency": "USD",
    }
    return content_hash(**(fields | changes))


def test_an_event_and_a_row_must_agree_on_the_currency() -> None:
    assert digest() == digest(amount=Decimal("150.250"))
    assert digest() != digest(currency="EUR")
    assert digest() != digest(currency=None)  # an event without one against a row with one
