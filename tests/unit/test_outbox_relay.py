"""The outbox relay's choice of rows and the fast path's lease (offline, with fakes)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest

from app.exceptions import PublishFailed
from app.recording import payment_store
from app.recording.outbox_relay import OutboxRelay, free_in_order
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


class FakeOutbox:
    """An asyncpg pool over a list of outbox rows: the relay's four statements, nothing else."""

    def __init__(self, rows: list[dict[str, Any]], *, lock_free: bool = True) -> None:
        self.rows = rows
        self.lock_free = lock_free
        self.deleted: list[Any] = []

    # pool.acquire() and connection.transaction() are both async context managers here.
    def acquire(self) -> FakeOutbox:
        return self

    def transaction(self) -> FakeOutbox:
        return self

    async def __aenter__(self) -> FakeOutbox:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def fetchval(self, query: str, *args: Any) -> bool:
        assert query == payment_store.RELAY_LOCK
        return self.lock_free

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if query == payment_store.UNLEASED_OUTBOX:
            return [
                {**r, "behind_held": r.get("behind_held", False)}
                for r in self.rows
                if not r.get("held")
            ]
        assert query == payment_store.TAKE_OUTBOX
        chosen = set(args[1])
        return [r for r in self.rows if r["batch_id"] in chosen]

    async def execute(self, query: str, batch_ids: list[Any]) -> None:
        assert query == payment_store.MARK_SENT
        self.deleted += batch_ids
        self.rows = [r for r in self.rows if r["batch_id"] not in set(batch_ids)]


class FakePublisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[bytes, bytes]]]] = []

    async def publish(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        self.sent.append((topic, list(messages)))


def outbox_row(name: str, keys: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "batch_id": name,
        "topic": "payment.events",
        "message_keys": keys,
        "payloads": [b"event of " + key for key in keys],
        **extra,
    }


async def test_the_relay_publishes_unsent_rows_with_their_bytes_then_deletes_them() -> None:
    pool = FakeOutbox([outbox_row("a", [b"LA-1", b"LA-2"]), outbox_row("b", [b"LA-3"])])
    publisher = FakePublisher()
    relay = OutboxRelay(cast(Any, pool), publisher, lease_seconds=30)
    assert await relay.relay() == 3
    assert publisher.sent == [
        (
            "payment.events",
            [(b"LA-1", b"event of LA-1"), (b"LA-2", b"event of LA-2"), (b"LA-3", b"event of LA-3")],
        )
    ]
    assert pool.deleted == ["a", "b"]
    assert pool.rows == []


async def test_the_relay_leaves_rows_behind_a_held_one_and_stops() -> None:
    pool = FakeOutbox([outbox_row("a", [b"LA-1"], behind_held=True), outbox_row("b", [b"LA-1"])])
    publisher = FakePublisher()
    assert await OutboxRelay(cast(Any, pool), publisher, lease_seconds=30).relay() == 0
    assert publisher.sent == []
    assert pool.deleted == []


async def test_another_workers_relay_holding_the_lock_means_nothing_is_sent() -> None:
    pool = FakeOutbox([outbox_row("a", [b"LA-1"])], lock_free=False)
    publisher = FakePublisher()
    assert await OutboxRelay(cast(Any, pool), publisher, lease_seconds=30).relay() == 0
    assert publisher.sent == []
    assert pool.rows != []


async def test_a_failed_publish_deletes_nothing() -> None:
    class Failing(FakePublisher):
        async def publish(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
            raise PublishFailed("no ack")

    pool = FakeOutbox([outbox_row("a", [b"LA-1"])])
    with pytest.raises(PublishFailed):
        await OutboxRelay(cast(Any, pool), Failing(), lease_seconds=30).relay()
    assert pool.deleted == []
    assert len(pool.rows) == 1
