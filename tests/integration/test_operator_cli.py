"""The operator commands, run as an operator would: ``python -m app ...`` against the real stack."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from app.kafka.topics import DLQ, INTAKE
from tables.references import TABLE_NAME
from tests.pipeline import (
    app_env,
    command,
    fetch,
    ok,
    reconcile,
    stage,
    topic_size,
    wait_consumed,
    wait_drained,
)
from tests.stack import Stack, Worker, run_worker, wait_for
from tests.webhook_client import signed

SECRET = "whsec_" + "b3BlcmF0b3IgY2xpIHRlc3Qgc2VjcmV0IQ=="
WEBHOOK = "/api/v1/payments/webhook"


def recorded_references(stack: Stack) -> set[str]:
    return {
        row["reference_number"]
        for row in fetch(stack, "SELECT reference_number FROM payment_service.payments")
    }


def figure(output: str, label: str) -> int:
    """The number after ``label:`` on its own line of a command's output."""
    match = re.search(rf"^\s*{re.escape(label)}: (\d+)$", output, re.MULTILINE)
    assert match, f"no {label!r} in:\n{output}"
    return int(match.group(1))


def staging_rows(
    prefix: str, count: int, payment_date: datetime, amount: Decimal = Decimal("12.34")
) -> list[tuple[Any, ...]]:
    return [
        (
            f"{prefix}-{number:04d}",
            f"LA{number:06d}",
            f"CIF{number:06d}",
            amount,
            payment_date - timedelta(minutes=number),
            "bank_transfer",
            json.dumps({"n": number}),
        )
        for number in range(count)
    ]


def test_replay_records_fixed_dead_letters_once_and_requeue_records_nothing_new(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    recent = staging_rows(f"R{run}", 40, now - timedelta(days=1))
    # Older than the first worker's window: the poller dead-letters them as invalid.
    old = staging_rows(f"O{run}", 15, now - timedelta(days=40))
    # Invalid whatever the window: a replay must leave them alone.
    bad = staging_rows(f"B{run}", 3, now - timedelta(days=1), amount=Decimal("-5.00"))
    asyncio.run(stage(stack, recent + old + bad))

    status = ok(command(stack, run, "staging", "status"))
    first_id = fetch(stack, "SELECT min(id) AS id FROM public.payment_staging")[0]["id"]
    assert f"backlog: 58 unprocessed rows; oldest id {first_id}" in status, status
    assert "no runs logged yet" in status

    narrow = app_env(
        run,
        WORKER_ID=f"cli-{run}",
        PAYMENT_DATE_MIN=(now - timedelta(days=10)).date().isoformat(),
    )
    with run_worker(stack, tmp_path, **narrow) as worker:
        asyncio.run(wait_drained(stack, 40, wait_seconds=180, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=120))
    assert recorded_references(stack) == {row[0] for row in recent}

    listing = ok(command(stack, run, "dlq", "list", "--reason", "invalid"))
    lines = [line for line in listing.splitlines() if re.match(r"^\d+/\d+ ", line)]
    assert len(lines) == 18, listing
    old_line = next(line for line in lines if f"ref=O{run}-0000 " in line)
    assert "source=staging:" in old_line
    assert "payment_date: must not be before" in old_line
    assert figure(listing, "invalid") == 18
    assert figure(listing, "total") == 18
    limited = ok(command(stack, run, "dlq", "list", "--limit", "5"))
    assert len([line for line in limited.splitlines() if re.match(r"^\d+/\d+ ", line)]) == 5
    assert "(13 more not shown: raise --limit)" in limited

    intake_before = asyncio.run(topic_size(stack, INTAKE))
    dry = ok(command(stack, run, "dlq", "replay", "--reason", "invalid", "--dry-run"))
    assert figure(dry, "would replay") == 15, dry
    assert figure(dry, "original is still not a valid record") == 3, dry
    assert dry.count("would replay ") == 15
    assert asyncio.run(topic_size(stack, INTAKE)) == intake_before

    # Two replays before any worker has recorded the first: Postgres cannot tell the
    # second one anything, so both send; the record agent's dedup must absorb it.
    for _ in range(2):
        replayed = ok(command(stack, run, "dlq", "replay", "--reason", "invalid"))
        assert figure(replayed, "replayed") == 15, replayed
        assert figure(replayed, "original is still not a valid record") == 3, replayed
    assert asyncio.run(topic_size(stack, INTAKE)) == intake_before + 30

    # The fix: a worker with the default window (2000-01-01 on).
    wide = app_env(run, WORKER_ID=f"cli-{run}")
    with run_worker(stack, tmp_path, **wide) as worker:
        asyncio.run(wait_drained(stack, 55, wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=120))
        assert recorded_references(stack) == {row[0] for row in recent + old}
        assert len(fetch(stack, "SELECT id FROM payment_service.payments")) == 55
        assert asyncio.run(topic_size(stack, DLQ)) == 18  # nothing dead-lettered again

        again = ok(command(stack, run, "dlq", "replay", "--reason", "invalid"))
        assert figure(again, "replayed") == 0, again
        assert figure(again, "already recorded with the same content") == 15, again
        asyncio.run(wait_consumed(stack, run, wait_seconds=60))
        assert len(fetch(stack, "SELECT id FROM payment_service.payments")) == 55
        assert asyncio.run(topic_size(stack, INTAKE)) == intake_before + 30

        # Requeue every staging row: all were recorded or are invalid, so nothing new.
        ids = fetch(stack, "SELECT min(id) AS low, max(id) AS high FROM public.payment_staging")
        low, high = str(ids[0]["low"]), str(ids[0]["high"])
        requeue = ("staging", "requeue", "--from-id", low, "--to-id", high)
        # A range past the last id: three chunks of 10,000 ids, a progress line each.
        beyond = str(int(low) + 25_000)
        dry = ok(command(stack, run, *requeue[:-1], beyond, "--dry-run"))
        assert f"would requeue 58 processed rows with ids {low}-{beyond}" in dry, dry
        assert len(re.findall(r"^\.\.\. ids \d+-\d+: would requeue", dry, re.MULTILINE)) == 3
        backlog = "SELECT count(*) AS n FROM public.payment_staging WHERE NOT processed"
        assert fetch(stack, backlog)[0]["n"] == 0
        runs_before = len(fetch(stack, "SELECT id FROM payment_service.staging_process_log"))
        requeued = ok(command(stack, run, *requeue))
        assert f"requeued 58 processed rows with ids {low}-{high}" in requeued, requeued
        asyncio.run(wait_drained(stack, 55, wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=120))

    assert len(fetch(stack, "SELECT id FROM payment_service.payments")) == 55
    staged = fetch(stack, "SELECT processed, processed_at FROM public.payment_staging")
    assert all(row["processed"] and row["processed_at"] is not None for row in staged)
    later = fetch(
        stack,
        """SELECT coalesce(sum(duplicate_records), 0) AS duplicates,
                  coalesce(sum(error_records), 0) AS errors,
                  coalesce(sum(total_records), 0) AS total
           FROM (SELECT * FROM payment_service.staging_process_log
                 ORDER BY started_at OFFSET $1) AS requeued_runs""",
        runs_before,
    )[0]
    assert (later["total"], later["duplicates"], later["errors"]) == (58, 55, 3)

    status = ok(command(stack, run, "staging", "status"))
    assert "backlog: 0 unprocessed rows" in status
    assert "completed" in status
    assert "failed runs: 0" in status
    code, figures = reconcile(stack, run)
    assert code == 0, figures


def _webhook(worker: Worker, reference: str, day: str) -> int:
    body = json.dumps(
        {
            "reference_number": reference,
            "loan_account_number": "LN-CLI-1",
            "cif": "C-CLI-1",
            "amount": 99.5,
            "payment_date": day,
        }
    ).encode()
    status, _, _ = worker.post(WEBHOOK, body, signed(SECRET, body, msg_id=f"id-{reference}"))
    return status


def test_lookup_finds_a_reference_in_postgres_redis_the_changelog_and_events(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    rows = staging_rows(f"L{run}", 5, now - timedelta(days=1))
    asyncio.run(stage(stack, rows))
    env = app_env(run, WEBHOOK_SECRET=SECRET)
    day = now.date().isoformat()
    webhook_reference = f"W{run}"
    with run_worker(stack, tmp_path, **env) as worker:
        worker.wait_web()
        asyncio.run(wait_drained(stack, 5, wait_seconds=180, alive=worker.assert_alive))
        # Warm up until the agent answers synchronously, then send the one we look up.
        wait_for(
            lambda: _webhook(worker, f"WARM-{uuid.uuid4().hex[:10]}", day) == 201,
            timeout=90,
            interval=1,
            what="synchronous webhook answers",
        )
        assert _webhook(worker, webhook_reference, day) == 201
        asyncio.run(wait_drained(stack, 7, wait_seconds=60, alive=worker.assert_alive))

    changelog = f"payments-{run}-{TABLE_NAME}-changelog"
    staged = ok(command(stack, run, "references", "lookup", rows[2][0]))
    assert "found    postgres payment_references: payment_id" in staged, staged
    assert "found    postgres payments: id" in staged
    assert "account LA000002" in staged
    assert f"found    changelog {changelog}: last value at" in staged, staged
    assert "found    payment.events: " in staged, staged
    assert "payment.recorded at" in staged
    # The hot cache holds only what webhooks carried.
    assert "absent   redis hot cache" in staged, staged

    hooked = ok(command(stack, run, "references", "lookup", webhook_reference))
    assert "found    postgres payments: " in hooked, hooked
    assert "source webhook" in hooked
    assert "found    redis payments:references:" in hooked, hooked
    assert f"found    redis decision: webhook-id id-{webhook_reference}: HTTP 201 created" in hooked
    assert "found    payment.events: " in hooked, hooked

    unknown = command(stack, run, "references", "lookup", f"NOPE-{run}")
    assert unknown.returncode == 0, unknown.stderr
    assert "absent   postgres payment_references" in unknown.stdout
    assert "found" not in unknown.stdout


def test_commands_say_what_to_do_when_a_service_is_down(stack: Stack, run: str) -> None:
    process = command(stack, run, "dlq", "list", KAFKA_BROKERS="127.0.0.1:1")
    assert process.returncode == 1
    assert "error: cannot reach Kafka at 127.0.0.1:1" in process.stderr
    assert "is the broker up? (`make up`" in process.stderr

    bad_range = command(stack, run, "staging", "requeue", "--from-id", "9", "--to-id", "3")
    assert bad_range.returncode == 1
    assert "error: --from-id 9 is after --to-id 3" in bad_range.stderr
