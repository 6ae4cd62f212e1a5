"""The outbox relay's choice of rows and the fast path's lease (offline, with fakes)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from app.recording.outbox_relay import free_in_order
from app.recording.payment_store import RENEW_LEASES, PaymentStore


def row(name: str, keys: set[bytes], *, behind_held: bool = False) -> dict[str, Any]:
    return {
        "batch_id": name,
        "topic": "payment.events",
        "message_keys": sorted(keys),
        "behind_held": behind_held,
    }


def test_a_row_behind_a_held_one_holds_back_its_accounts_in_turn() -> None:
    candidates = [
        row("a", {b"LA-1"}, behind_held=True),  # an earlier row of LA-1 is still held
        row("b", {b"LA-1", b"LA-2"}),  # LA-1 waits for a: so does LA-2 now
        row("c", {b"LA-2"}),
        row("d", {b"LA-3"}),
        row("e", {b"LA-4"}),
    ]

    assert free_in_order(candidates, limit=10) == ["d", "e"]
    assert free_in_order(candidates, limit=1) == ["d"]


def test_keys_of_other_topics_do_not_hold_a_row_back() -> None:
    candidates = [
        {**row("a", {b"K"}, behind_held=True), "topic": "payment.intake.dlq"},
        row("b", {b"K"}),
    ]

    assert free_in_order(candidates, limit=10) == ["b"]


class FakePool:
    """Records the lease renewals; Postgres' clock is not needed to count them."""

    def __init__(self) -> None:
        self.renewals: list[tuple[list[uuid.UUID], float]] = []

    async def execute(self, query: str, batch_ids: list[uuid.UUID], seconds: float) -> None:
        assert query == RENEW_LEASES
        self.renewals.append((batch_ids, seconds))


async def test_the_fast_path_renews_its_lease_while_it_holds_and_stops_after() -> None:
    pool = FakePool()
    store = PaymentStore(pool, "payment.events", outbox_lease_seconds=0.06)  # type: ignore[arg-type]
    batch = uuid.uuid4()

    async with store.holding([batch]):
        await asyncio.sleep(0.2)  # about ten renewal periods of 0.02 s
    renewed = len(pool.renewals)
    await asyncio.sleep(0.1)

    assert renewed >= 3
    assert pool.renewals[0] == ([batch], 0.06)
    assert len(pool.renewals) == renewed  # nothing after the body: a dead worker renews nothing


async def test_nothing_to_hold_starts_no_renewals() -> None:
    pool = FakePool()
    store = PaymentStore(pool, "payment.events", outbox_lease_seconds=0.03)  # type: ignore[arg-type]

    async with store.holding([]):
        await asyncio.sleep(0.05)

    assert pool.renewals == []
