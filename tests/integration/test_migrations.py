"""Migrations on a real Postgres: empty and migrated databases, partitions, uniqueness, races."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from app.exceptions import MigrationError
from app.storage.migrations import Migration, discover, migrate
from tests.stack import Stack


async def test_migrations_apply_on_empty_and_again_on_migrated(
    connection: asyncpg.Connection,
) -> None:
    first = await migrate(connection)
    assert [m.version for m in first] == [m.version for m in discover()]
    assert await migrate(connection) == []
    ledger = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [row["version"] for row in ledger] == [m.version for m in discover()]
    tables = {
        row["name"]
        for row in await connection.fetch(
            "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
            " WHERE table_schema IN ('public', 'payment_service')"
        )
    }
    assert {
        "public.payment_staging",
        "payment_service.payments",
        "payment_service.payment_references",
        "payment_service.staging_process_log",
        "payment_service.outbox",
    } <= tables
    indexes = {
        row["indexname"]
        for row in await connection.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname IN ('public', 'payment_service')"
        )
    }
    assert {
        "idx_payments_reference",
        "idx_payments_loan_account",
        "idx_payments_cif",
        "idx_payments_created_at",
        "idx_payment_refs_created",
        "idx_payment_staging_unprocessed",
    } <= indexes
    partial = await connection.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_payment_staging_unprocessed'"
    )
    assert "WHERE (NOT processed)" in partial


def month_start(moment: datetime, offset: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1)  # noqa: DTZ001 (payment_date is naive UTC)


async def test_partitions_cover_three_months_back_and_ahead(connection: asyncpg.Connection) -> None:
    await migrate(connection)
    now = await connection.fetchval("SELECT now()::timestamp")
    partitions = {
        row["name"]
        for row in await connection.fetch(
            "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'payment_service.payments'::regclass"
        )
    }
    months = [month_start(now, offset) for offset in range(-3, 4)]
    assert partitions == {f"payments_{m:%Y_%m}" for m in months}
    # The partitioned table rejects nothing in the created months: first and last instant.
    rows = []
    for start in months:
        end = month_start(start, 1) - timedelta(microseconds=1)
        for moment in (start, end):
            rows.append(
                (
                    f"ref-{moment.isoformat()}",
                    "LN0001",
                    "CIF01",
                    Decimal("10.50"),
                    moment,
                    "staging",
                )
            )
    await connection.executemany(
        "INSERT INTO payment_service.payments"
        " (reference_number, loan_account_number, cif, amount, payment_date, source)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        rows,
    )
    assert await connection.fetchval("SELECT count(*) FROM payment_service.payments") == len(rows)
    # Outside the window there is no partition: the insert fails loudly, it never goes astray.
    with pytest.raises(asyncpg.CheckViolationError, match="no partition"):
        await connection.execute(
            "INSERT INTO payment_service.payments"
            " (reference_number, loan_account_number, cif, amount, payment_date, source)"
            " VALUES ('late', 'LN', 'CIF', 1, $1, 'staging')",
            month_start(now, 12),
        )


async def test_payment_references_enforce_uniqueness(connection: asyncpg.Connection) -> None:
    await migrate(connection)
    insert = (
        "INSERT INTO payment_service.payment_references"
        " (reference_number, payment_id, payment_date, fingerprint) VALUES ($1, $2, now(), 'f')"
    )
    await connection.execute(insert, "REF-1", uuid.uuid4())
    with pytest.raises(asyncpg.UniqueViolationError):
        await connection.execute(insert, "REF-1", uuid.uuid4())
    returned = await connection.fetch(
        insert + " ON CONFLICT DO NOTHING RETURNING payment_id", "REF-1", uuid.uuid4()
    )
    assert returned == []
    assert await connection.fetchval("SELECT count(*) FROM payment_service.payment_references") == 1


async def test_an_edited_migration_is_refused(connection: asyncpg.Connection) -> None:
    migrations = discover()
    await migrate(connection, migrations)
    edited = [
        Migration(migrations[0].version, migrations[0].name, migrations[0].sql + "\n-- edit"),
        *migrations[1:],
    ]
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(connection, edited)


async def test_a_failing_migration_leaves_nothing_half_done(connection: asyncpg.Connection) -> None:
    broken = [
        Migration("0001", "broken", "CREATE TABLE half_done (id int); SELECT no_such_function();")
    ]
    with pytest.raises(MigrationError, match="0001_broken failed"):
        await migrate(connection, broken)
    assert await connection.fetchval("SELECT to_regclass('public.half_done')") is None
    assert await connection.fetchval("SELECT count(*) FROM schema_migrations") == 0


async def test_two_workers_migrating_at_once_apply_each_migration_once(
    stack: Stack, empty_database: str
) -> None:
    first, second = [
        await asyncpg.connect(**stack.db_connect_kwargs(empty_database)) for _ in range(2)
    ]
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(len(result) for result in applied) == [0, len(discover())]
    finally:
        await first.close()
        await second.close()


async def test_partition_creation_is_safe_under_concurrency(
    stack: Stack, empty_database: str
) -> None:
    async with asyncpg.create_pool(
        **stack.db_connect_kwargs(empty_database), min_size=4, max_size=4
    ) as pool:
        async with pool.acquire() as connection:
            await migrate(connection)
        month = date(2031, 5, 17)
        names = await asyncio.gather(
            *(
                pool.fetchval("SELECT payment_service.ensure_payment_partition($1)", month)
                for _ in range(8)
            )
        )
        assert set(names) == {"payments_2031_05"}


async def test_unsent_events_survive_the_move_to_one_outbox_row_per_batch(
    connection: asyncpg.Connection,
) -> None:
    # A worker upgraded while a crash had left events unsent must still relay them.
    before = [m for m in discover() if m.version < "0005"]
    await migrate(connection, before)
    events = [(uuid.uuid4(), f"LN{n}", f'{{"n": {n}}}') for n in range(3)]
    for event_id, key, payload in events:
        await connection.execute(
            "INSERT INTO payment_service.outbox (event_id, payment_id, topic, message_key, payload)"
            " VALUES ($1, $2, 'payment.events', $3, $4)",
            event_id,
            uuid.uuid4(),
            key,
            payload,
        )
    await migrate(connection)

    rows = await connection.fetch(
        "SELECT topic, event_ids, message_keys, payloads FROM payment_service.outbox"
    )
    assert len(rows) == 1
    assert rows[0]["topic"] == "payment.events"
    assert sorted(
        zip(rows[0]["event_ids"], rows[0]["message_keys"], rows[0]["payloads"], strict=True)
    ) == sorted((e, k.encode(), p.encode()) for e, k, p in events)
