"""The cache layers on the real stack: each switch, the same answers; the start-up probe.

A worker per combination of ENABLE_MEMORY_CACHE and ENABLE_REDIS_CACHE answers the
created / duplicate / conflict / replay suite of test_webhooks.py the same way;
/metrics says which layer answered the duplicate, and counts it once as a decision.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.models import payment_id_for
from tests.integration.test_webhooks import OLD, answer, generic
from tests.pipeline import app_env, fresh_pipeline, moved, samples, wait_quiet
from tests.stack import Stack, Worker, run_worker, wait_for
from tests.webhook_client import signed

WEBHOOK = "/api/v1/payments/webhook"
RUN = uuid.uuid4().hex[:8]


def decides(worker: Worker) -> bool:
    reference = f"WARM-{uuid.uuid4().hex[:12]}"
    body = generic(reference)
    return worker.post(WEBHOOK, body, signed(OLD, body, msg_id=reference))[0] == 201


@pytest.fixture(
    scope="module",
    params=[(True, True), (True, False), (False, True), (False, False)],
    ids=["memory+redis", "memory only", "redis only", "no cache"],
)
def cached(
    request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, bool, bool]]:
    memory, redis = request.param
    asyncio.run(fresh_pipeline(stack))
    env = app_env(
        f"caches-{RUN}-{int(memory)}{int(redis)}",
        WEBHOOK_SECRET=OLD,
        ENABLE_MEMORY_CACHE=str(memory).lower(),
        ENABLE_REDIS_CACHE=str(redis).lower(),
    )
    with run_worker(stack, tmp_path_factory.mktemp("caches"), **env) as worker:
        worker.wait_web()
        wait_for(lambda: decides(worker), timeout=90, interval=1, what="synchronous answers")
        wait_quiet(worker)
        yield worker, memory, redis


def test_each_cache_setting_gives_the_same_answers(cached: tuple[Worker, bool, bool]) -> None:
    worker, memory, redis = cached
    reference = f"CL-{RUN}-{uuid.uuid4().hex[:8]}"
    payment_id = str(payment_id_for(reference))
    before = samples(worker)

    created = answer(worker, generic(reference), f"{reference}-1")
    duplicate = answer(worker, generic(reference), f"{reference}-2")
    conflict = answer(worker, generic(reference, amount=150.26), f"{reference}-3")
    replayed = answer(worker, generic(reference), f"{reference}-1")
    # The agent counts its decisions once a batch is done: a conflict is answered (from the
    # announcement, right after the commit) while its dead letter is still being published.
    decided = "payments_decisions_total"
    after = samples(worker)
    deadline = time.monotonic() + 10
    while moved(before, after, decided, source="webhook", outcome="conflict") < 1:
        assert time.monotonic() < deadline, "the conflict was answered but never counted"
        time.sleep(0.2)
        after = samples(worker)

    assert created == (201, {"status": "created", "payment_id": payment_id}, "")
    assert duplicate == (200, {"status": "duplicate", "payment_id": payment_id}, "")
    assert conflict == (
        409,
        {"status": "conflict", "payment_id": payment_id, "differing_fields": ["amount"]},
        "",
    )
    assert replayed == (*created[:2], "true")
    # The duplicate is one decision, whichever layer answered it.
    assert moved(before, after, decided, source="webhook", outcome="created") == 1
    assert moved(before, after, decided, source="webhook", outcome="duplicate") == 1
    assert moved(before, after, decided, source="webhook", outcome="conflict") == 1
    # The first layer switched on answers it; with none, the record agent does (from its
    # table: the reference is committed).
    layer = "memory" if memory else "redis" if redis else "table"
    assert moved(before, after, "payments_reference_answers_total", layer=layer) >= 1
    requests = "payments_cache_requests_total"
    if not memory:
        assert not [key for key in after if key[0] == requests and ("layer", "memory") in key[1]]
    if not redis:
        assert moved(before, after, requests, layer="redis", result="hit") == 0
        assert moved(before, after, requests, layer="redis", result="miss") == 0
    else:
        assert moved(before, after, requests, layer="redis", result="miss") >= 1
    assert moved(before, after, requests, layer="database", result="miss") == 1


def test_the_start_log_says_what_the_redis_switch_leaves_on(
    cached: tuple[Worker, bool, bool],
) -> None:
    worker, _, redis = cached
    if redis:
        assert worker.logged("Redis hot reference cache on"), worker.log()[-3000:]
    else:
        assert worker.logged("ENABLE_REDIS_CACHE=false: no hot reference cache in Redis")
        assert worker.logged("the webhook-id replay window")


#: References recorded before the worker starts: enough that warming them takes a few
#: seconds (60 batches of 5000) while /health/startup is asked.
WARM_ROWS = 300_000

#: ``$2`` references created ``$3`` hours ago and before, 1000 a second (a batch of the
#: record agent shares its transaction's created_at).
INSERT_RECORDED = """
INSERT INTO payment_service.payment_references
       (reference_number, payment_id, payment_date, fingerprint, created_at)
SELECT $1 || n, gen_random_uuid(), now(), md5(n::text) || md5(n::text),
       LOCALTIMESTAMP - make_interval(hours => $3, secs => n / 1000)
  FROM generate_series(1, $2) AS n
"""


async def record(stack: Stack, prefix: str, count: int, hours_ago: int) -> None:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        await connection.execute(INSERT_RECORDED, prefix, count, hours_ago)
    finally:
        await connection.close()


def startup(worker: Worker) -> tuple[int, dict[str, Any]] | None:
    try:
        status, raw = worker.get("/health/startup", timeout=2)
    except OSError:
        return None  # not listening yet
    return status, json.loads(raw)


def test_the_startup_probe_answers_503_until_the_cache_is_warmed_then_200(
    stack: Stack, tmp_path: Path
) -> None:
    asyncio.run(fresh_pipeline(stack))
    asyncio.run(record(stack, f"SU-{RUN}-", WARM_ROWS, hours_ago=0))
    asyncio.run(record(stack, f"OLD-{RUN}-", 1000, hours_ago=25))  # past CACHE_WARM_HOURS
    env = app_env(f"startup-{RUN}", WEBHOOK_SECRET=OLD, MEMORY_CACHE_MAX_SIZE=str(WARM_ROWS + 1000))
    with run_worker(stack, tmp_path, **env) as worker:
        answers: list[tuple[int, dict[str, Any]]] = []

        def started() -> bool:
            worker.assert_alive()
            got = startup(worker)
            if got is not None:
                answers.append(got)
            return got is not None and got[0] == 200

        wait_for(started, timeout=120, interval=0.05, what="/health/startup to answer 200")
        done = [m for m in worker.log_messages() if m.startswith("cache warming done")]

    warming = [body for status, body in answers if status == 503]
    assert any(body["checks"]["cache"] == "warming" for body in warming), answers[:3]
    assert all(body["status"] == "starting" for body in warming)
    assert answers[-1] == (
        200,
        {"status": "started", "checks": {"cache": "warmed", "tables": "recovered"}},
    )
    assert len(done) == 1
    assert done[0].startswith(f"cache warming done: {WARM_ROWS} references"), done  # no OLD-
    progress = [m for m in worker.log_messages() if m.startswith("cache warming: ")]
    assert any("references loaded" in m for m in progress), progress
