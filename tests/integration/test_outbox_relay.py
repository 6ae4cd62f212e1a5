"""The outbox relay on the real stack: it leaves held rows alone and keeps each account's order."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.kafka.publisher import Publisher
from app.kafka.topics import EVENTS_DEFAULT
from app.models import PaymentRecord
from app.recording.outbox_relay import OutboxRelay
from app.recording.payment_store import PaymentStore
from tests.pipeline import fresh_pipeline, read_topic
from tests.stack import Stack

#: Short leases keep the test short; the worker's default is 15 s.
LEASE = 1.0


@pytest.fixture
async def parts(stack: Stack) -> AsyncIterator[tuple[PaymentStore, OutboxRelay, Publisher]]:
    await fresh_pipeline(stack)
    pool = await asyncpg.create_pool(**stack.db_connect_kwargs(), min_size=1, max_size=4)
    publisher = Publisher(stack.settings())
    await publisher.start()
    try:
        store = PaymentStore(pool, EVENTS_DEFAULT, outbox_lease_seconds=LEASE)
        yield store, OutboxRelay(pool, publisher, lease_seconds=LEASE), publisher
    finally:
        await publisher.stop()
        await pool.close()


def payment(reference: str, account: str) -> PaymentRecord:
    return PaymentRecord.model_validate(
        {
            "reference_number": reference,
            "loan_account_number": account,
            "cif": "CIF-1",
            "amount": "10.00",
            "payment_date": datetime.now(UTC) - timedelta(days=1),
            "source": "staging",
            "source_id": "1",
            "received_at": datetime.now(UTC),
        }
    )


async def published(stack: Stack) -> list[str]:
    """The references of payment.events, in the order one account's partition holds them."""
    return [
        json.loads(value)["payment"]["reference_number"]
        for _, value in await read_topic(stack, EVENTS_DEFAULT)
    ]


async def relay_for(relay: OutboxRelay, seconds: float) -> int:
    """Run the relay's ticks for ``seconds``; the events it sent."""
    sent = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sent += await relay.relay()
        await asyncio.sleep(0.2)
    return sent


async def test_a_held_batch_is_left_alone_and_a_dead_workers_batch_is_relayed_once(
    stack: Stack, parts: tuple[PaymentStore, OutboxRelay, Publisher]
) -> None:
    store, relay, _ = parts
    reference = f"HELD-{uuid.uuid4().hex[:8]}"
    result = await store.record([payment(reference, "LA-HELD")])

    # The fast path is alive and still retrying its publish for three leases.
    async with store.holding(result.outbox_batches):
        while_held = await relay_for(relay, 3 * LEASE)
    # Then the worker dies: nothing renews the lease, nothing deletes the row.
    after_death = await relay_for(relay, 2 * LEASE)

    assert while_held == 0
    assert after_death == 1
    assert await published(stack) == [reference]


async def test_an_accounts_events_never_overtake_an_earlier_held_batch(
    stack: Stack, parts: tuple[PaymentStore, OutboxRelay, Publisher]
) -> None:
    store, relay, publisher = parts
    run = uuid.uuid4().hex[:8]
    first, second, other = f"ORD1-{run}", f"ORD2-{run}", f"ORD3-{run}"
    earlier = await store.record([payment(first, "LA-ORDER")])

    async with store.holding(earlier.outbox_batches):
        # A later batch of the same account whose worker died, and one of another account.
        await store.record([payment(second, "LA-ORDER")])
        await store.record([payment(other, "LA-OTHER")])
        await asyncio.sleep(LEASE + 0.5)
        while_held = await relay_for(relay, LEASE)
        # The fast path's publish goes through; it deletes its row.
        events: list[Any] = [(event.key, event.payload) for event in earlier.events]
        await publisher.publish(EVENTS_DEFAULT, events)
        await store.mark_sent(earlier.outbox_batches)
    after = await relay_for(relay, LEASE)

    assert while_held == 1  # the other account's only
    assert after == 1
    order = await published(stack)
    assert sorted(order) == sorted([first, second, other])
    assert order.index(first) < order.index(second)
