"""WEBHOOK_PROCESSES on the real stack: fronts answer like the worker, restart, end with it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.pipeline import app_env, fresh_pipeline, moved, samples, wait_quiet
from tests.stack import Stack, Worker, free_port, run_worker, wait_for
from tests.webhook_client import signed

SECRET = "whsec_" + "ZnJvbnQgcHJvY2Vzc2VzIHNpZ25pbmcgc2VjcmV0IQ=="
WEBHOOK = "/api/v1/payments/webhook"
RUN = uuid.uuid4().hex[:8]
LISTENING = re.compile(r"webhook front (\d+) \(pid (\d+)\) listening")


def fronts_env(port: int, run: str) -> dict[str, str]:
    return app_env(run, WEBHOOK_SECRET=SECRET, WEBHOOK_PROCESSES="2", WEBHOOK_PORT=str(port))


def listening(worker: Worker) -> dict[int, int]:
    """Front index → pid of its latest start, from the worker's log."""
    return {
        int(match[1]): int(match[2])
        for message in worker.log_messages()
        if (match := LISTENING.search(message))
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def notice(reference: str, **changes: Any) -> tuple[bytes, dict[str, str]]:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": 99.5,
        "payment_date": "2026-11-27",
    } | changes
    raw = json.dumps(body).encode()
    return raw, signed(SECRET, raw, msg_id=f"{reference}-{uuid.uuid4().hex[:6]}")


def decides(front: Worker) -> bool:
    """True once a new notice through the fronts is answered 201."""
    try:
        return front.post(WEBHOOK, *notice(f"WARM-{uuid.uuid4().hex[:10]}"))[0] == 201
    except OSError:  # not listening yet
        return False


@pytest.fixture(scope="module")
def pair(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Worker]]:
    """A worker with two fronts, and the fronts as a Worker whose base URL is WEBHOOK_PORT."""
    asyncio.run(fresh_pipeline(stack))
    port = free_port()
    env = fronts_env(port, f"fronts-{RUN}")
    with run_worker(stack, tmp_path_factory.mktemp("fronts"), **env) as worker:
        wait_for(lambda: len(listening(worker)) == 2, timeout=60, what="two webhook fronts")
        front = Worker(
            worker.process, f"http://127.0.0.1:{port}", worker.log_path, worker.log_start
        )
        wait_for(lambda: decides(front), timeout=90, interval=1, what="answers through a front")
        yield worker, front


@pytest.fixture
def fronts(pair: tuple[Worker, Worker]) -> Worker:
    return pair[1]


def test_metrics_sum_the_fronts_and_the_worker_after_a_known_load(
    pair: tuple[Worker, Worker],
) -> None:
    worker, front = pair
    before = wait_quiet(worker)  # warm-up notices may still be decided
    references = [f"FR-{RUN}-metrics-{n}" for n in range(10)]
    for reference in references:
        assert front.post(WEBHOOK, *notice(reference))[0] == 201
    for reference in references[:3]:
        assert front.post(WEBHOOK, *notice(reference))[0] == 200  # the hot cache answers
    assert front.post(WEBHOOK, b"{}", {})[0] == 401
    after = samples(worker)

    def change(name: str, **labels: str) -> float:
        return moved(before, after, name, **labels)

    def events_counted() -> bool:
        # The events' acks may come just after the answers (the decisions need only the commit).
        nonlocal after
        after = samples(worker)
        return change("payments_kafka_messages_total", topic="payment.events", result="ok") >= 10

    wait_for(events_counted, timeout=15, what="the events' acks counted")

    webhook = "payments_webhook_duration_seconds_count"
    assert change(webhook, status="201") == 10
    assert change(webhook, status="200") == 3
    assert change(webhook, status="401") == 1
    assert change("payments_decisions_total", source="webhook", outcome="created") == 10
    # The duplicates are decisions too, counted once though no record agent saw them: the
    # front that created a reference knows it in memory, the other asks Redis's hot cache.
    assert change("payments_decisions_total", source="webhook", outcome="duplicate") == 3
    answered = {
        layer: change("payments_reference_answers_total", layer=layer)
        for layer in ("memory", "redis", "table", "postgres")
    }
    assert answered["memory"] + answered["redis"] == 3, answered
    assert (answered["table"], answered["postgres"]) == (0, 0), answered
    hits = {
        layer: change("payments_cache_requests_total", layer=layer, result="hit")
        for layer in ("memory", "redis")
    }
    assert hits == {"memory": answered["memory"], "redis": answered["redis"]}
    # Each new reference: a miss in the front's memory and in Redis, then in the agent's
    # memory, the table and Postgres, which creates it.
    for layer in ("redis", "table", "database"):
        assert change("payments_cache_requests_total", layer=layer, result="miss") == 10, layer
    assert (
        change("payments_cache_requests_total", layer="memory", result="miss") == 20 + hits["redis"]
    )
    intake = {"topic": "payment.intake", "result": "ok"}
    assert change("payments_kafka_messages_total", **intake) == 10
    assert change("payments_kafka_messages_total", topic="payment.events", result="ok") == 10
    assert ("payments_db_pool_size", frozenset()) in after
    # Faust's own sensors count too: the intake records the worker's consumer took in.
    faust_in = "payments_faust_messages_received_per_topic_total"
    assert change(faust_in, topic="payment.intake") == 10
    assert after[("payments_outbox_events", frozenset())] >= 0
    # Nothing per reference: the labels are small fixed sets.
    assert not [key for key in after if any(f"FR-{RUN}" in value for _, value in key[1])]


def test_fronts_answer_created_duplicate_and_conflict(fronts: Worker) -> None:
    reference = f"FR-{RUN}-outcomes"
    status, _, created = fronts.post(WEBHOOK, *notice(reference))
    assert status == 201, created
    payment_id = json.loads(created)["payment_id"]
    status, _, duplicate = fronts.post(WEBHOOK, *notice(reference))
    assert (status, json.loads(duplicate)) == (
        200,
        {"status": "duplicate", "payment_id": payment_id},
    )
    status, _, conflict = fronts.post(WEBHOOK, *notice(reference, amount=100.5))
    assert status == 409
    assert json.loads(conflict)["differing_fields"] == ["amount"]
    status, _, unsigned = fronts.post(WEBHOOK, b"{}", {})
    assert status == 401, unsigned


def test_concurrent_copies_across_fronts_create_one_payment(stack: Stack, fronts: Worker) -> None:
    reference = f"FR-{RUN}-race"

    async def race() -> list[tuple[int, dict[str, Any]]]:
        # One connection per request: the kernel spreads them over both fronts.
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> tuple[int, dict[str, Any]]:
                body, headers = notice(reference)
                async with session.post(fronts.base_url + WEBHOOK, data=body, headers=headers) as r:
                    return r.status, await r.json()

            return await asyncio.gather(*(one() for _ in range(100)))

    answers = asyncio.run(race())
    statuses = Counter(status for status, _ in answers)
    assert statuses == {201: 1, 200: 99}, statuses
    assert len({body["payment_id"] for _, body in answers}) == 1

    async def rows() -> int:
        connection = await asyncpg.connect(**stack.db_connect_kwargs())
        try:
            count: int = await connection.fetchval(
                "SELECT count(*) FROM payment_service.payments WHERE reference_number = $1",
                reference,
            )
            return count
        finally:
            await connection.close()

    assert asyncio.run(rows()) == 1


def test_a_front_that_dies_is_started_again(fronts: Worker) -> None:
    before = listening(fronts)
    os.kill(before[0], signal.SIGKILL)
    wait_for(
        lambda: listening(fronts).get(0) not in (None, before[0]),
        timeout=30,
        what="front 0 started again",
    )
    assert fronts.logged(
        f"webhook front 0 (pid {before[0]}) exited with code -9; starting it again"
    )
    assert listening(fronts)[1] == before[1]  # the other front was left alone
    assert alive(before[1])
    for n in range(5):
        status, _, body = fronts.post(WEBHOOK, *notice(f"FR-{RUN}-after-restart-{n}"))
        assert status == 201, body


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_fronts_end_with_their_worker(stack: Stack, tmp_path: Path, stop: signal.Signals) -> None:
    env = fronts_env(free_port(), f"fronts-end-{RUN}-{stop.name}")
    with run_worker(stack, tmp_path, **env) as worker:
        pids = wait_for(
            lambda: len(listening(worker)) == 2 and listening(worker),
            timeout=60,
            what="two webhook fronts",
        )
        assert all(alive(pid) for pid in pids.values())
        worker.process.send_signal(stop)
        worker.process.wait(timeout=30)
        wait_for(
            lambda: not any(alive(pid) for pid in pids.values()),
            timeout=10,
            what=f"the fronts to exit after the worker's {stop.name}",
        )


def test_a_clean_shutdown_mid_load_loses_no_acknowledged_payment(
    stack: Stack, tmp_path: Path
) -> None:
    """SIGTERM while 150 notices are in flight: no 500, and every 2xx is recorded once."""
    run = f"fronts-stop-{RUN}"
    port = free_port()
    env = fronts_env(port, run) | {"WORKER_ID": f"fronts-stop-{RUN}"}
    references = [f"FR-{RUN}-stop-{n:03d}" for n in range(150)]
    url = f"http://127.0.0.1:{port}{WEBHOOK}"

    async def load(worker: Worker) -> dict[str, int | str]:
        outcomes: dict[str, int | str] = {}
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(reference: str) -> None:
                body, headers = notice(reference)
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        outcomes[reference] = response.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    outcomes[reference] = type(exc).__name__

            async def stop_soon() -> None:
                await asyncio.sleep(0.2)
                worker.process.send_signal(signal.SIGTERM)

            await asyncio.gather(stop_soon(), *(one(reference) for reference in references))
        return outcomes

    with run_worker(stack, tmp_path, **env) as worker:
        front = Worker(
            worker.process, f"http://127.0.0.1:{port}", worker.log_path, worker.log_start
        )
        wait_for(lambda: decides(front), timeout=90, interval=1, what="answers through a front")
        # A running worker: its agent can answer before Faust has finished starting (the
        # table's store opens last), and a SIGTERM then ends the start, not a run.
        wait_for(lambda: worker.get("/health/ready")[0] == 200, timeout=90, what="worker ready")
        outcomes = asyncio.run(load(worker))
        assert worker.process.wait(timeout=30) == 0, worker.log()[-3000:]

    statuses = Counter(outcomes.values())
    assert not {status for status in statuses if isinstance(status, int) and status >= 500} - {
        503
    }, statuses
    acknowledged = [ref for ref, status in outcomes.items() if status in (200, 201, 202)]
    assert acknowledged, statuses  # the stop came while requests were being answered

    # The next start decides whatever the stopped worker had not.
    with run_worker(stack, tmp_path, **env):

        async def recorded() -> dict[str, int]:
            connection = await asyncpg.connect(**stack.db_connect_kwargs())
            try:
                rows = await connection.fetch(
                    "SELECT reference_number, count(*) AS n FROM payment_service.payments"
                    " WHERE reference_number = ANY($1) GROUP BY reference_number",
                    acknowledged,
                )
                return {row["reference_number"]: row["n"] for row in rows}
            finally:
                await connection.close()

        counts = wait_for(
            lambda: (c := asyncio.run(recorded())) and len(c) == len(acknowledged) and c,
            timeout=90,
            interval=1,
            what="every acknowledged notice recorded",
        )
        assert set(counts.values()) == {1}
