"""Partition and reference maintenance on a real Postgres (a brand-new migrated database)."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app import months
from app.models import PaymentRecord
from app.recording.payment_store import PaymentStore
from app.recording.retention import prune_references, reference_cutoff
from app.storage import partitions
from app.storage.migrations import migrate
from tests.pipeline import app_env, command, fetch, fresh_pipeline, ok
from tests.stack import Stack, run_worker, wait_for

TODAY = date(2026, 11, 28)


@pytest.fixture
async def migrated(connection: asyncpg.Connection) -> asyncpg.Connection:
    await migrate(connection)
    return connection


@pytest.fixture
async def pool(stack: Stack, empty_database: str, migrated: Any) -> AsyncIterator[asyncpg.Pool]:
    options = stack.db_connect_kwargs(empty_database)
    pool = await asyncpg.create_pool(**options, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def names(connection: asyncpg.Connection) -> list[str]:
    return [partition.name for partition in await partitions.list_partitions(connection)]


async def test_ensure_creates_each_month_once_under_concurrency(
    stack: Stack, empty_database: str, migrated: asyncpg.Connection
) -> None:
    connections = [
        await asyncpg.connect(**stack.db_connect_kwargs(empty_database)) for _ in range(6)
    ]
    try:
        results = await asyncio.gather(
            *(partitions.ensure(connection, date(2031, 1, 15)) for connection in connections)
        )
    finally:
        for connection in connections:
            await connection.close()
    wanted = ["payments_2031_01", "payments_2031_02", "payments_2031_03", "payments_2031_04"]
    created = [name for result in results for name in result]
    assert sorted(created) == wanted  # each month created by exactly one caller
    present = await names(migrated)
    assert all(present.count(name) == 1 for name in wanted)
    assert await partitions.ensure(migrated, date(2031, 1, 15)) == []


async def test_prune_removes_exactly_the_expired_months_after_a_dry_run(
    migrated: asyncpg.Connection,
) -> None:
    for month in ("2000-01-01", "2025-09-01", "2025-10-01", "2025-11-01", "2025-12-01"):
        await migrated.execute(partitions.ENSURE, date.fromisoformat(month))
    for day in ("2025-10-31 23:59:59", "2025-11-01 00:00:00"):
        # Recorded on their day, as the window lets them (an old row recorded today is kept).
        await migrated.execute(
            "INSERT INTO payment_service.payments (reference_number, loan_account_number, cif,"
            " amount, payment_date, source, created_at)"
            " VALUES ($1, 'LA1', 'C1', 1, $2, 'staging', $2)",
            f"PRUNE-{day}",
            datetime.fromisoformat(day),
        )
    before = await names(migrated)
    expired = ["payments_2000_01", "payments_2025_09", "payments_2025_10"]

    dry = await partitions.prune(migrated, TODAY, 12, dry_run=True)
    assert [partition.name for partition in dry.dropped] == expired
    assert dry.held == []
    assert await names(migrated) == before

    said: list[str] = []
    pruned = await partitions.prune(migrated, TODAY, 12, dry_run=False, progress=said.append)
    assert [partition.name for partition in pruned.dropped] == expired
    assert await names(migrated) == [name for name in before if name not in expired]
    assert len(said) == 3
    left = await migrated.fetch("SELECT reference_number FROM payment_service.payments")
    assert [row["reference_number"] for row in left] == ["PRUNE-2025-11-01 00:00:00"]
    assert await partitions.prune(migrated, TODAY, 12, dry_run=False) == partitions.PruneRun()


INSERT_ROW = (
    "INSERT INTO payment_service.payments (reference_number, loan_account_number, cif,"
    " amount, payment_date, source, created_at) VALUES ($1, 'LA1', 'C1', 1, $2, 'staging', $3)"
)


async def test_prune_keeps_an_expired_month_holding_rows_recorded_after_its_window_closed(
    migrated: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    for month in ("2025-08-01", "2025-09-01", "2025-10-01"):
        await migrated.execute(partitions.ENSURE, date.fromisoformat(month))
    august, september = datetime(2025, 8, 15), datetime(2025, 9, 15)  # noqa: DTZ001 (naive UTC)
    await migrated.execute(INSERT_ROW, "AUG-OLD", august, august)
    await migrated.execute(INSERT_ROW, "SEP-OLD", september, september)
    # September expires on 2026-10-01: rows recorded from 2026-09-23 on came too late.
    await migrated.execute(INSERT_ROW, "SEP-LATE", september, datetime(2026, 9, 23))  # noqa: DTZ001
    await migrated.execute(INSERT_ROW, "SEP-NOW", september, datetime.now(UTC).replace(tzinfo=None))

    dry = await partitions.prune(migrated, TODAY, 12, dry_run=True)
    assert [partition.name for partition in dry.dropped] == ["payments_2025_08", "payments_2025_10"]
    [held] = dry.held
    assert (held.partition.name, held.rows) == ("payments_2025_09", 2)
    assert held.since == datetime(2026, 9, 23)  # noqa: DTZ001

    caplog.set_level(logging.ERROR, logger="app.storage.partitions")
    caplog.clear()
    run = await partitions.prune(migrated, TODAY, 12, dry_run=False)
    assert [partition.name for partition in run.dropped] == ["payments_2025_08", "payments_2025_10"]
    assert [kept.partition.name for kept in run.held] == ["payments_2025_09"]
    assert "payments_2025_09" in await names(migrated)
    left = await migrated.fetch("SELECT reference_number FROM payment_service.payments ORDER BY 1")
    assert [row["reference_number"] for row in left] == ["SEP-LATE", "SEP-NOW", "SEP-OLD"]
    [warning] = [r.getMessage() for r in caplog.records if "payments_2025_09" in r.getMessage()]
    assert "past PARTITION_RETENTION_MONTHS=12 but is not dropped: 2 of its rows" in warning
    assert "created_at >= '2026-09-23 00:00'" in warning
    assert "raise PARTITION_RETENTION_MONTHS" in warning

    # Once the operator has removed the late rows, the next run drops the month.
    await migrated.execute(
        "DELETE FROM payment_service.payments WHERE created_at >= $1", held.since
    )
    again = await partitions.prune(migrated, TODAY, 12, dry_run=False)
    assert [partition.name for partition in again.dropped] == ["payments_2025_09"]
    assert again.held == []


def test_partitions_prune_says_which_month_it_keeps_and_why(stack: Stack, run: str) -> None:
    today = datetime.now(UTC).date()
    young, old = months.add_months(today, -15), months.add_months(today, -16)
    young_name, old_name = partitions.partition_name(young), partitions.partition_name(old)

    async def prepare() -> None:
        connection = await asyncpg.connect(**stack.db_connect_kwargs())
        try:
            for month in (young, old):
                await connection.execute(partitions.ENSURE, month)
            old_day = datetime.combine(old, datetime.min.time())
            await connection.execute(INSERT_ROW, f"OLD-{run}", old_day, old_day)
            young_day = datetime.combine(young, datetime.min.time())
            recorded = datetime.now(UTC).replace(tzinfo=None)
            await connection.execute(INSERT_ROW, f"YOUNG-{run}", young_day, recorded)
        finally:
            await connection.close()

    asyncio.run(prepare())
    try:
        dry = ok(command(stack, run, "partitions", "prune", "--dry-run"))
        assert (
            f"would keep 1 expired partitions that hold young rows:\n  {young_name} is past" in dry
        )
        assert old_name in dry
        assert {young_name, old_name} <= set(asyncio.run(_names(stack)))

        said = ok(command(stack, run, "partitions", "prune"))
        assert f"kept 1 expired partitions that hold young rows:\n  {young_name} is past" in said
        assert "1 of its rows were recorded on or after" in said
        present = asyncio.run(_names(stack))
        assert young_name in present
        assert old_name not in present
        rows = fetch(stack, "SELECT reference_number FROM payment_service.payments")
        assert [row["reference_number"] for row in rows] == [f"YOUNG-{run}"]
    finally:
        fetch(stack, f"DROP TABLE IF EXISTS payment_service.{young_name}")


async def _names(stack: Stack) -> list[str]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        return await names(connection)
    finally:
        await connection.close()


def payment(reference: str, payment_date: datetime, amount: str = "10.00") -> PaymentRecord:
    return PaymentRecord.model_validate(
        {
            "reference_number": reference,
            "loan_account_number": "LA-1",
            "cif": "CIF-1",
            "amount": amount,
            "payment_date": payment_date,
            "payment_channel": "bank_transfer",
            "source": "staging",
            "source_id": "1",
            "received_at": datetime.now(UTC),
        }
    )


async def test_a_late_duplicate_beyond_the_reference_window_stays_a_duplicate(
    pool: asyncpg.Pool,
) -> None:
    store = PaymentStore(pool, "payment.events")
    now = datetime.now(UTC).replace(microsecond=0)
    old = payment("LATE-1", now - timedelta(days=200))
    kept = payment("LATE-2", now - timedelta(days=200))
    first = await store.record([old, kept])
    assert len(first.created) == 2
    # LATE-1 was recorded 100 days ago; LATE-2 only yesterday (a late-arriving old payment).
    await pool.execute(
        "UPDATE payment_service.payment_references SET created_at = created_at - $2::interval"
        " WHERE reference_number = $1",
        "LATE-1",
        timedelta(days=100),
    )
    cutoff = reference_cutoff(now, 90)
    async with pool.acquire() as connection:
        dry = await prune_references(connection, cutoff, dry_run=True)
        assert (dry.expired, dry.removed) == (1, 0)
        run = await prune_references(connection, cutoff, dry_run=False)
    assert (run.expired, run.removed) == (1, 1)
    references = await pool.fetch("SELECT reference_number FROM payment_service.payment_references")
    assert [row["reference_number"] for row in references] == ["LATE-2"]

    again = await store.record([payment("LATE-1", old.payment_date)])
    assert again.created == []
    assert again.existing["LATE-1"].fingerprint == old.fingerprint
    assert again.existing["LATE-1"].payment_id == old.payment_id
    changed = await store.record([payment("LATE-1", old.payment_date, amount="11.00")])
    assert changed.created == []
    assert (
        changed.existing["LATE-1"].fingerprint
        != payment("LATE-1", old.payment_date, "11.00").fingerprint
    )
    assert changed.existing["LATE-1"].payment_id == old.payment_id
    fresh = await store.record([payment("LATE-3", old.payment_date)])
    assert [record.reference_number for record in fresh.created] == ["LATE-3"]

    rows = await pool.fetch(
        "SELECT reference_number, count(*) AS n FROM payment_service.payments"
        " GROUP BY reference_number ORDER BY reference_number"
    )
    assert [(row["reference_number"], row["n"]) for row in rows] == [
        ("LATE-1", 1),
        ("LATE-2", 1),
        ("LATE-3", 1),
    ]
    # The reference is back, under its first payment: the table answers next time.
    restored = await pool.fetchrow(
        "SELECT payment_id, fingerprint FROM payment_service.payment_references"
        " WHERE reference_number = 'LATE-1'"
    )
    assert (restored["payment_id"], restored["fingerprint"]) == (old.payment_id, old.fingerprint)


async def test_a_month_dropped_after_this_worker_created_it_is_made_again(
    pool: asyncpg.Pool,
) -> None:
    remembers = PaymentStore(pool, "payment.events")
    last_month = datetime.now(UTC).replace(microsecond=0) - timedelta(days=35)
    first = await remembers.record([payment("MONTH-1", last_month)])
    assert [record.reference_number for record in first.created] == ["MONTH-1"]
    # Maintenance (or an operator) drops the month; this worker still remembers creating it.
    await pool.execute(f"DROP TABLE payment_service.{partitions.partition_name(last_month)}")

    # Other workers, which never saw the month, would create it again and record: so must this
    # one, rather than have Postgres refuse the record (a `rejected` dead letter).
    again = await remembers.record([payment("MONTH-2", last_month)])
    assert [record.reference_number for record in again.created] == ["MONTH-2"]
    rows = await pool.fetch("SELECT reference_number FROM payment_service.payments")
    assert [row["reference_number"] for row in rows] == ["MONTH-2"]


def test_the_leaders_timer_keeps_partitions_ahead_and_expires_references(
    stack: Stack, tmp_path: Path
) -> None:
    asyncio.run(fresh_pipeline(stack))
    farthest = partitions.partition_name(
        months.add_months(datetime.now(UTC).date().replace(day=1), partitions.PARTITIONS_AHEAD)
    )
    # An expired month holding a row recorded today: the timer must keep it, and say so.
    young = months.add_months(datetime.now(UTC).date(), -15)

    async def prepare() -> None:
        connection = await asyncpg.connect(**stack.db_connect_kwargs())
        try:
            await connection.execute(f"DROP TABLE IF EXISTS payment_service.{farthest}")
            await connection.execute(partitions.ENSURE, young)
            recorded = datetime.now(UTC).replace(tzinfo=None)
            young_day = datetime.combine(young, datetime.min.time())
            await connection.execute(INSERT_ROW, "TIMER-YOUNG", young_day, recorded)
            await connection.execute(
                "INSERT INTO payment_service.payment_references"
                " (reference_number, payment_id, payment_date, fingerprint, created_at)"
                " VALUES ('TIMER-OLD', gen_random_uuid(), now() - interval '200 days', 'f',"
                "         now() - interval '100 days'),"
                "        ('TIMER-NEW', gen_random_uuid(), now() - interval '200 days', 'f', now())"
            )
        finally:
            await connection.close()

    async def state() -> tuple[list[str], list[str], Any]:
        connection = await asyncpg.connect(**stack.db_connect_kwargs())
        try:
            present = await names(connection)
            refs = await connection.fetch(
                "SELECT reference_number FROM payment_service.payment_references ORDER BY 1"
            )
            watermark = await connection.fetchval(
                "SELECT pruned_before FROM payment_service.reference_retention"
            )
        finally:
            await connection.close()
        return present, [row["reference_number"] for row in refs], watermark

    asyncio.run(prepare())
    env = app_env(uuid.uuid4().hex[:10], PARTITION_MAINTENANCE_INTERVAL_SECONDS="2")
    with run_worker(stack, tmp_path, **env) as worker:
        worker.wait_web()

        def maintained() -> tuple[list[str], list[str], Any] | None:
            worker.assert_alive()
            present, refs, watermark = asyncio.run(state())
            return (
                (present, refs, watermark)
                if farthest in present and refs == ["TIMER-NEW"]
                else None
            )

        present, _, watermark = wait_for(maintained, timeout=90, what="the maintenance timer")
        assert watermark is not None
        assert partitions.partition_name(young) in present
        status, body = worker.get("/metrics")
        assert status == 200
        text = body.decode()
        kept = re.search(r"^payments_partitions_kept_total (\S+)$", text, re.MULTILINE)
        assert kept is not None
        assert float(kept[1]) >= 1
        assert "payments_partitions_ahead_months 3.0" in text
        assert f'payments_partition_bytes{{partition="{farthest}"}}' in text
        wait_for(
            lambda: worker.get("/metrics")[1].decode().count("payments_consumer_lag{") == 12,
            timeout=60,
            what="consumer lag for the 12 intake partitions",
        )
    fetch(stack, f"DROP TABLE IF EXISTS payment_service.{partitions.partition_name(young)}")
