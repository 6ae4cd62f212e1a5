"""A record batch in one statement (migrations/0010) against the long way, on a real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from app.models import PaymentRecord
from app.recording.payment_store import LATE_DUPLICATES, PaymentStore, _LateDuplicates
from app.storage.migrations import migrate
from tests.stack import Stack

EVENTS = "payment.events"


@pytest.fixture
async def pool(stack: Stack, empty_database: str) -> AsyncIterator[asyncpg.Pool]:
    options = stack.db_connect_kwargs(empty_database)
    connection = await asyncpg.connect(**options)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    pool = await asyncpg.create_pool(**options, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


def payment(reference: str, amount: str = "10.00", days_ago: int = 1) -> PaymentRecord:
    return PaymentRecord.model_validate(
        {
            "reference_number": reference,
            "loan_account_number": "LA-1",
            "cif": "CIF-1",
            "amount": amount,
            "payment_date": datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago),
            "payment_channel": "card",
            "currency": "USD",
            "metadata": {"card_last4": "4242", "note": "ünïcode"},
            "source": "webhook",
            "source_id": reference,
            "received_at": datetime.now(UTC),
        }
    )


async def tables(pool: asyncpg.Pool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The payments rows and the outbox rows, without the columns each run fills anew."""
    payments = await pool.fetch(
        "SELECT id, reference_number, loan_account_number, cif, amount, payment_date,"
        " payment_channel, source, metadata, currency FROM payment_service.payments"
        " ORDER BY reference_number"
    )
    outbox = await pool.fetch(
        "SELECT topic, event_ids, message_keys, payloads FROM payment_service.outbox"
    )
    return [tuple(row) for row in payments], [tuple(row) for row in outbox]


async def test_one_statement_records_what_the_long_way_records(pool: asyncpg.Pool) -> None:
    store = PaymentStore(pool, EVENTS)
    first = [payment("ONE-1"), payment("ONE-2")]
    await store.record(first)
    # A batch of new references, a duplicate and a conflict (same reference, other amount).
    batch = [payment("ONE-3"), payment("ONE-1"), payment("ONE-4"), payment("ONE-2", "99.00")]
    await store.ensure_partitions(batch)
    await pool.execute("TRUNCATE payment_service.payments, payment_service.outbox")

    short = await store._record_in_one_statement(batch)
    after_short = await tables(pool)
    await pool.execute("TRUNCATE payment_service.payments, payment_service.outbox")
    await pool.execute(
        "DELETE FROM payment_service.payment_references"
        " WHERE reference_number IN ('ONE-3', 'ONE-4')"
    )
    long = await store._record_the_long_way(batch)
    after_long = await tables(pool)

    for result in (short, long):
        assert [record.reference_number for record in result.created] == ["ONE-3", "ONE-4"]
        assert sorted(result.existing) == ["ONE-1", "ONE-2"]
        assert result.existing["ONE-1"].fingerprint == first[0].fingerprint
        assert result.existing["ONE-2"].payment_id == first[1].payment_id
        assert [event.event_id for event in result.events] == [batch[0].event_id, batch[2].event_id]
        assert len(result.outbox_batches) == 1
    # The same payments rows; one outbox row each, of the new payments' events in batch order
    # (the payloads differ only by the recording time they carry).
    assert after_short[0] == after_long[0]
    (short_row,), (long_row,) = after_short[1], after_long[1]
    assert (
        short_row[:3]
        == long_row[:3]
        == (
            EVENTS,
            [batch[0].event_id, batch[2].event_id],
            [b"LA-1", b"LA-1"],
        )
    )
    assert short_row[3] == [event.payload for event in short.events]


async def test_a_batch_with_nothing_new_writes_no_outbox_row(pool: asyncpg.Pool) -> None:
    store = PaymentStore(pool, EVENTS)
    batch = [payment("DUP-1"), payment("DUP-2")]
    await store.record(batch)
    await pool.execute("DELETE FROM payment_service.outbox")

    again = await store.record(batch)
    assert again.created == []
    assert again.events == []
    assert again.outbox_batches == []
    assert sorted(again.existing) == ["DUP-1", "DUP-2"]
    assert await pool.fetchval("SELECT count(*) FROM payment_service.outbox") == 0
    assert await pool.fetchval("SELECT count(*) FROM payment_service.payments") == 2


async def test_a_late_duplicate_makes_the_statement_change_nothing(pool: asyncpg.Pool) -> None:
    store = PaymentStore(pool, EVENTS)
    late = payment("LATE-1", days_ago=200)
    await store.record([late])
    # Reference retention removed LATE-1's reference (its watermark first).
    await pool.execute(
        "INSERT INTO payment_service.reference_retention (id, pruned_before) VALUES (TRUE, $1)",
        datetime.now().replace(microsecond=0) - timedelta(days=90),  # noqa: DTZ005  # TIMESTAMP
    )
    await pool.execute("DELETE FROM payment_service.payment_references")
    batch = [payment("LATE-1", days_ago=200), payment("NEW-1")]
    await store.ensure_partitions(batch)
    with pytest.raises(_LateDuplicates) as refused:
        await store._record_in_one_statement(batch)
    assert isinstance(refused.value.__cause__, asyncpg.PostgresError)
    assert refused.value.__cause__.sqlstate == LATE_DUPLICATES
    assert await pool.fetchval("SELECT count(*) FROM payment_service.payment_references") == 0
    assert await pool.fetchval("SELECT count(*) FROM payment_service.payments") == 1

    # The store then records the batch the long way: the new payment once, the late one
    # answered with its first payment, whose reference is back.
    result = await store.record(batch)
    assert [record.reference_number for record in result.created] == ["NEW-1"]
    assert result.existing["LATE-1"].payment_id == late.payment_id
    rows = await pool.fetch(
        "SELECT reference_number, count(*) AS n FROM payment_service.payments"
        " GROUP BY reference_number ORDER BY reference_number"
    )
    assert [(row["reference_number"], row["n"]) for row in rows] == [("LATE-1", 1), ("NEW-1", 1)]
    restored = await pool.fetchval(
        "SELECT payment_id FROM payment_service.payment_references"
        " WHERE reference_number = 'LATE-1'"
    )
    assert restored == late.payment_id
