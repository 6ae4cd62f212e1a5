"""GET /api/v1/payments/stats on the real stack: equal to SQL over the same data and the load."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from app.ops.authorization import new_token
from tests.pipeline import app_env, fresh_pipeline, make_load, stage, wait_drained
from tests.stack import Stack, Worker, run_worker, wait_for
from tests.webhook_client import signed

SECRET = "whsec_" + "c3RhdHMgdGVzdCBzZWNyZXQgb2YgdGhpcyBydW4h"
WEBHOOK = "/api/v1/payments/webhook"
TOKEN, TOKEN_ENTRY = new_token("stats-test", "viewer")

#: The same figures as app/ops/todays_stats.py, written separately so a slip in one shows.
EXPECTED_SQL = """
WITH today AS (SELECT date_trunc('day', now() AT TIME ZONE 'utc') AS midnight),
     batches AS (
       SELECT total_records, completed_at - started_at AS took
       FROM payment_service.staging_process_log, today
       WHERE status = 'completed' AND completed_at >= today.midnight),
     hooks AS (
       SELECT requests, outcome, response_ms_total
       FROM payment_service.webhook_request_counts, today
       WHERE minute >= today.midnight AT TIME ZONE 'utc')
SELECT (SELECT coalesce(sum(total_records), 0) FROM batches) AS processed_today,
       (SELECT count(*) FROM public.payment_staging WHERE processed IS FALSE) AS pending_count,
       (SELECT coalesce(avg(extract(epoch FROM took)) * 1000, 0) FROM batches) AS batch_ms,
       (SELECT coalesce(sum(requests), 0) FROM hooks) AS received_today,
       (SELECT coalesce(sum(requests), 0) FROM hooks WHERE outcome = 'duplicate') AS duplicates,
       (SELECT coalesce(sum(response_ms_total), 0) FROM hooks) AS total_ms
"""


def notice(reference: str) -> bytes:
    return json.dumps(
        {
            "reference_number": reference,
            "loan_account_number": "LN0001234",
            "cif": "C000987",
            "amount": 150.25,
            "payment_date": datetime.now(UTC).date().isoformat(),
        }
    ).encode()


class Sender:
    """Sends signed notices and remembers every answer it got."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.statuses: list[int] = []

    def send(self, body: bytes, secret: str = SECRET) -> int:
        headers = signed(secret, body, msg_id=f"msg-{uuid.uuid4().hex}")
        status, _, _ = self.worker.post(WEBHOOK, body, headers)
        self.statuses.append(status)
        return status


async def expected(stack: Stack) -> dict[str, Any]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        row = await connection.fetchrow(EXPECTED_SQL)
    finally:
        await connection.close()
    received = int(row["received_today"])
    return {
        "staging": {
            "processed_today": int(row["processed_today"]),
            "pending_count": int(row["pending_count"]),
            "average_batch_time_ms": round(float(row["batch_ms"]), 2),
        },
        "webhooks": {
            "received_today": received,
            "duplicate_rate": round(int(row["duplicates"]) / received, 4) if received else 0.0,
            "average_response_time_ms": round(float(row["total_ms"]) / received, 2)
            if received
            else 0.0,
        },
    }


def stats(worker: Worker) -> dict[str, Any]:
    status, body = worker.get(
        "/api/v1/payments/stats", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200, body
    return json.loads(body)


def test_stats_equal_sql_over_the_same_data_and_the_load_sent(stack: Stack, tmp_path: Path) -> None:
    asyncio.run(fresh_pipeline(stack))
    run = uuid.uuid4().hex[:10]
    env = app_env(run, WEBHOOK_SECRET=SECRET, API_TOKENS=TOKEN_ENTRY)
    with run_worker(stack, tmp_path, **env) as worker:
        worker.wait_web()
        empty = stats(worker)
        assert empty["webhooks"] == {
            "received_today": 0,
            "duplicate_rate": 0.0,
            "average_response_time_ms": 0.0,
        }
        sender = Sender(worker)
        wait_for(
            lambda: sender.send(notice(f"STATS-{run}-warm-{len(sender.statuses)}")) == 201,
            timeout=90,
            interval=1,
            what="synchronous answers",
        )
        for n in range(8):
            assert sender.send(notice(f"STATS-{run}-{n}")) in (201, 202)  # 202: still deciding
        assert sender.send(notice(f"STATS-{run}-bad-signature"), secret="whsec_" + "AAAA") == 401
        load = make_load(60, f"STATS-{run}-staged")
        asyncio.run(stage(stack, load.rows))
        new = sum(1 for status in sender.statuses if status in (201, 202))
        asyncio.run(wait_drained(stack, load.created + new, 120))
        for n in range(3):
            assert sender.send(notice(f"STATS-{run}-{n}")) == 200  # committed: duplicates

        sent = len(sender.statuses)
        duplicates = sender.statuses.count(200)

        def counted() -> dict[str, Any] | None:
            now = stats(worker)
            return now if now["webhooks"]["received_today"] == sent else None

        figures = wait_for(counted, timeout=15, what=f"{sent} webhook requests counted")
        assert figures == asyncio.run(expected(stack))
        assert figures["staging"]["processed_today"] == len(load.rows)
        assert figures["staging"]["pending_count"] == 0
        assert figures["staging"]["average_batch_time_ms"] > 0
        assert figures["webhooks"]["duplicate_rate"] == round(duplicates / sent, 4)
        assert figures["webhooks"]["average_response_time_ms"] > 0
