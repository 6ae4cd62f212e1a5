"""FAULT_POINT's hooks reach the record agent only through the composition root."""

from __future__ import annotations

import pytest

from agents.record_payments import FaultHooks
from app import fault_points
from app.recording.payment_store import PaymentStore
from app.service import _fault_hooks
from app.settings import Settings


def test_without_a_fault_point_the_agent_gets_no_hooks() -> None:
    assert _fault_hooks(Settings()) is None
    assert FaultHooks() == FaultHooks(store=PaymentStore)


@pytest.mark.parametrize(
    ("point", "field"),
    [
        ("poison_record", "store"),
        ("freeze_in_transaction", "after_claim"),
        ("after_commit", "crash_after_commit"),
    ],
)
def test_each_fault_point_sets_one_hook(point: str, field: str) -> None:
    hooks = _fault_hooks(Settings(fault_point=point))
    assert hooks == fault_points.record_hooks(point)
    assert hooks is not None
    changed = {name for name in ("store", "after_claim", "crash_after_commit")}
    changed = {name for name in changed if getattr(hooks, name) != getattr(FaultHooks(), name)}
    assert changed == {field}
