"""The recording pipeline on the real stack: staging → intake → agent → Postgres + events."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka.partitioner import murmur2

from app.kafka.codecs import decode_dead_letter, decode_event
from app.kafka.topics import DLQ, EVENTS_DEFAULT
from app.storage.partitions import partition_name
from tests.pipeline import (
    app_env,
    make_load,
    read_topic,
    reconcile,
    run_id,
    stage,
    wait_consumed,
    wait_drained,
)
from tests.stack import Stack, run_worker


async def _rows(stack: Stack, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def test_ten_thousand_staged_rows_record_exactly(stack: Stack, run: str, tmp_path: Path) -> None:
    load = make_load(10_000, f"T{run}")
    asyncio.run(stage(stack, load.rows))
    # Through a helper process (not the default): its path, checked row for row.
    env = app_env(run, STAGING_HELPER_PROCESSES="1")
    with run_worker(stack, tmp_path, **env) as worker:
        asyncio.run(wait_drained(stack, load.created, wait_seconds=240, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run))

    counts = asyncio.run(
        _rows(
            stack,
            """SELECT (SELECT count(*) FROM payment_service.payments) AS payments,
                      (SELECT count(*) FROM payment_service.payment_references) AS refs,
                      (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS left""",
        )
    )[0]
    assert (counts["payments"], counts["refs"], counts["left"]) == (load.created, load.created, 0)

    events = [decode_event(value) for _, value in asyncio.run(read_topic(stack, EVENTS_DEFAULT))]
    assert len({event.event_id for event in events}) == load.created
    rows = {
        str(row["id"]): row
        for row in asyncio.run(_rows(stack, "SELECT * FROM payment_service.payments"))
    }
    for event in events:
        row = rows[str(event.payment.id)]
        payment = event.payment
        assert (
            payment.reference_number,
            payment.loan_account_number,
            payment.cif,
            payment.amount,
            payment.payment_date.replace(tzinfo=None),
            payment.payment_channel,
            payment.source,
            payment.metadata,
        ) == (
            row["reference_number"],
            row["loan_account_number"],
            row["cif"],
            row["amount"],
            row["payment_date"],
            row["payment_channel"],
            row["source"],
            json.loads(row["metadata"]),
        )

    letters = [decode_dead_letter(value) for _, value in asyncio.run(read_topic(stack, DLQ))]
    reasons = Counter(letter.reason for letter in letters)
    assert reasons == {"invalid": load.invalid, "conflict": load.conflicts}
    conflict = next(letter for letter in letters if letter.reason == "conflict")
    assert conflict.differing_fields == ["amount"]
    assert conflict.payment_id is not None
    invalid = next(letter for letter in letters if letter.reason == "invalid")
    assert invalid.details
    assert invalid.source == "staging"
    assert invalid.original is not None

    log = asyncio.run(
        _rows(
            stack,
            """SELECT sum(total_records) AS total, sum(processed_records) AS published,
                      sum(duplicate_records) AS duplicates, sum(error_records) AS errors,
                      count(*) FILTER (WHERE status <> 'completed') AS not_completed
               FROM payment_service.staging_process_log""",
        )
    )[0]
    assert log["total"] == len(load.rows)
    assert log["errors"] == load.invalid
    assert log["published"] + log["duplicates"] == len(load.rows) - load.invalid
    assert log["not_completed"] == 0

    code, figures = reconcile(stack, run)
    assert code == 0, figures
    assert figures["payment_rows"] == figures["distinct_event_ids"] == load.created


def test_known_references_stay_duplicates_even_when_only_postgres_knows(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    load = make_load(2_000, f"K{run}", duplicate_rate=0, conflict_rate=0, invalid_rate=0)
    data = tmp_path / "first"
    data.mkdir()
    asyncio.run(stage(stack, load.rows))
    with run_worker(stack, data, **app_env(run)) as worker:
        asyncio.run(wait_drained(stack, load.created, wait_seconds=120, alive=worker.assert_alive))
        # Again, while the table has them: every row is a duplicate.
        asyncio.run(stage(stack, load.rows))
        asyncio.run(wait_drained(stack, load.created, wait_seconds=120, alive=worker.assert_alive))

    # A new worker with no RocksDB state (a new app id, so no changelog either):
    # only Postgres knows the references. Sent straight to the intake topic, past
    # the poller's own duplicate check, they must still be duplicates.
    second_run = run_id()
    second = tmp_path / "second"
    second.mkdir()
    # Nor does it warm its memory cache from Postgres: Postgres itself must answer.
    with run_worker(stack, second, **app_env(second_run, CACHE_WARM_HOURS="0")) as worker:
        asyncio.run(_publish_staged_again(stack, load.rows))
        asyncio.run(wait_consumed(stack, second_run, wait_seconds=120))

    count = asyncio.run(_rows(stack, "SELECT count(*) AS n FROM payment_service.payments"))[0]["n"]
    assert count == load.created
    events = asyncio.run(read_topic(stack, EVENTS_DEFAULT))
    assert len(events) == load.created
    code, figures = reconcile(stack, run)
    assert code == 0, figures


async def _publish_staged_again(stack: Stack, rows: list[tuple[Any, ...]]) -> None:
    """Put rows on the intake topic directly, as a second input would."""
    from app.kafka.codecs import encode_record
    from app.kafka.publisher import Publisher
    from app.kafka.topics import INTAKE
    from app.models import PaymentRecord

    publisher = Publisher(stack.settings())
    await publisher.start()
    try:
        now = datetime.now(UTC)
        messages = []
        for number, row in enumerate(rows):
            record = PaymentRecord(
                reference_number=row[0],
                loan_account_number=row[1],
                cif=row[2],
                amount=Decimal(row[3]),
                payment_date=row[4],
                payment_channel=row[5],
                metadata=json.loads(row[6]),
                source="webhook",
                source_id=f"replay-{number}",
                received_at=now,
            )
            messages.append((record.reference_number.encode(), encode_record(record)))
        await publisher.publish(INTAKE, messages)
    finally:
        await publisher.stop()


def _partition(key: str) -> int:
    """The intake partition of ``key`` (the producer's murmur2 over 12 partitions)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % 12


def test_payments_older_than_retention_are_dead_lettered_and_the_rest_recorded(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    old_date = now - timedelta(days=730)
    old_month = f"payment_service.{partition_name(old_date.date())}"
    existed = asyncio.run(_rows(stack, "SELECT to_regclass($1) AS t", old_month))[0]["t"]
    # A staging row two years old, then good rows behind it in the same batch.
    staged_old = (f"OLDS-{run}", "LA-OLD", "CIF-OLD", Decimal("5.00"), old_date, "bank", "{}")
    staged_good = [
        (
            f"GOODS-{run}-{n}",
            "LA-1",
            "CIF-1",
            Decimal("5.00"),
            now - timedelta(days=1),
            "bank",
            "{}",
        )
        for n in range(5)
    ]
    # A record two years old straight onto the intake, then good ones behind it on its partition.
    old_key = f"OLDI-{run}"
    candidates = (f"GOODI-{run}-{n}" for n in range(500))
    good_keys = [key for key in candidates if _partition(key) == _partition(old_key)][:3]
    assert good_keys
    intake_rows = [
        (old_key, "LA-OLD", "CIF-OLD", "7.00", old_date, "card", "{}"),
        *(
            (key, "LA-2", "CIF-2", "7.00", now - timedelta(days=1), "card", "{}")
            for key in good_keys
        ),
    ]

    with run_worker(stack, tmp_path, **app_env(run)) as worker:
        asyncio.run(stage(stack, [staged_old, *staged_good]))
        asyncio.run(_publish_staged_again(stack, intake_rows))
        good = len(staged_good) + len(good_keys)
        asyncio.run(wait_drained(stack, good, wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run))

    rows = asyncio.run(_rows(stack, "SELECT reference_number FROM payment_service.payments"))
    recorded = {row["reference_number"] for row in rows}
    assert recorded == {row[0] for row in staged_good} | set(good_keys)
    references = asyncio.run(
        _rows(stack, "SELECT reference_number FROM payment_service.payment_references")
    )
    assert {row["reference_number"] for row in references} == recorded

    letters = [decode_dead_letter(value) for _, value in asyncio.run(read_topic(stack, DLQ))]
    by_reference = {letter.reference_number: letter for letter in letters}
    assert set(by_reference) == {f"OLDS-{run}", old_key}
    assert {letter.reason for letter in letters} == {"beyond_retention"}
    assert (by_reference[f"OLDS-{run}"].source, by_reference[old_key].source) == (
        "staging",
        "webhook",
    )
    for letter in letters:
        assert [detail.field for detail in letter.details] == ["payment_date"]
        assert "PARTITION_RETENTION_MONTHS=12" in letter.details[0].message

    left = "SELECT count(*) AS n FROM public.payment_staging WHERE NOT processed"
    assert asyncio.run(_rows(stack, left))[0]["n"] == 0
    if existed is None:
        # Never recorded into a month that will be dropped: its partition was not even made.
        after = asyncio.run(_rows(stack, "SELECT to_regclass($1) AS t", old_month))
        assert after[0]["t"] is None
    code, figures = reconcile(stack, run)
    assert code == 0, figures


def test_a_worker_records_a_month_dropped_after_it_created_it(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    last_month = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=35)
    name = f"payment_service.{partition_name(last_month.date())}"

    def row(reference: str) -> tuple[Any, ...]:
        return (reference, "LA-1", "CIF-1", Decimal("5.00"), last_month, "bank", "{}")

    with run_worker(stack, tmp_path, **app_env(run)) as worker:
        asyncio.run(stage(stack, [row(f"FIRST-{run}")]))
        asyncio.run(wait_drained(stack, 1, wait_seconds=120, alive=worker.assert_alive))
        # Maintenance (or an operator) drops the month this worker remembers creating.
        asyncio.run(_rows(stack, f"DROP TABLE {name}"))
        asyncio.run(stage(stack, [row(f"SECOND-{run}"), row(f"THIRD-{run}")]))
        # Staged, published and decided: then look at what came of it.
        asyncio.run(wait_drained(stack, 0, wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run))
        letters = [decode_dead_letter(value) for _, value in asyncio.run(read_topic(stack, DLQ))]
        assert [(letter.reason, letter.reference_number) for letter in letters] == []
        assert worker.logged("were dropped after this worker created them; creating them again")

    rows = asyncio.run(_rows(stack, "SELECT reference_number FROM payment_service.payments"))
    assert {row["reference_number"] for row in rows} == {f"SECOND-{run}", f"THIRD-{run}"}
