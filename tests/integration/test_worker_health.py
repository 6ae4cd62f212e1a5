"""The worker starts on its own port; /health and /health/ready name a stopped dependency; live."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import Stack, Worker, run_worker, wait_for


def get_json(worker: Any, path: str) -> tuple[int, dict[str, Any]]:
    try:
        status, body = worker.get(path)
    except OSError:
        return 0, {}
    return status, json.loads(body)


def health(worker: Any) -> tuple[int, dict[str, Any]]:
    return get_json(worker, "/health")


def test_worker_health_follows_its_dependencies(native: Stack, tmp_path: Path) -> None:
    with run_worker(native, tmp_path) as worker:

        def healthy() -> bool:
            assert worker.process.poll() is None, worker.log()[-3000:]
            status, body = health(worker)
            return status == 200 and body.get("status") == "healthy"

        wait_for(healthy, timeout=90, what="the worker's /health to answer healthy")
        _, body = health(worker)
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["kafka"] == "ok"
        assert body["checks"]["redis"] == "ok"
        assert isinstance(body["checks"]["staging_backlog"], int)
        assert "last_staging_run" in body["checks"]

        def ready() -> dict[str, Any] | None:
            status, body = get_json(worker, "/health/ready")
            return body if status == 200 else None

        body = wait_for(ready, timeout=90, what="/health/ready")
        assert body["status"] == "ready"
        assert (body["checks"]["partitions"], body["checks"]["tables"]) == ("assigned", "recovered")

        # Stop each dependency in turn: /health names it (and only it), then recovers.
        for service, check in (("redis", "redis"), ("kafka", "kafka"), ("postgres", "database")):
            native.script("down", service)
            try:

                def reported_down(check: str = check) -> dict[str, Any] | None:
                    status, body = health(worker)
                    return body if status == 503 and body["checks"][check] == "error" else None

                body = wait_for(reported_down, timeout=30, what=f"/health to report {check}")
                status, readiness = get_json(worker, "/health/ready")
                assert (status, readiness["status"], readiness["checks"][check]) == (
                    503,
                    "not_ready",
                    "error",
                )
                # Liveness ignores dependencies: an outage must not restart the workers.
                assert get_json(worker, "/health/live") == (200, {"status": "alive"})
                assert body["status"] == "unhealthy"
                assert set(body["errors"]) == {check}
                assert {name: body["checks"][name] for name in ("database", "kafka", "redis")} == {
                    name: "error" if name == check else "ok"
                    for name in ("database", "kafka", "redis")
                }
            finally:
                native.script("up", service)
            wait_for(healthy, timeout=60, what=f"/health to be healthy after {service} restarted")
            wait_for(ready, timeout=60, what=f"/health/ready after {service} restarted")
        assert worker.process.poll() is None


def test_the_database_pool_is_open_before_the_web_server_answers(
    native: Stack, tmp_path: Path
) -> None:
    # A worker whose database is unreachable never starts serving /health as healthy: the pool is
    # a dependency that starts first, and start-up fails with a sentence saying what to check.
    with run_worker(native, tmp_path, DB_PORT="1", STARTUP_TIMEOUT_SECONDS="4") as worker:
        worker.process.wait(timeout=120)
        assert worker.process.returncode != 0
        assert worker.logged("Postgres at 127.0.0.1:1/collectioncrm did not answer within 4 s")
        assert worker.logged("scripts/stack status")


def probe_runs(worker: Worker) -> dict[str, float]:
    """payments_probe_runs_total by probe, from the worker's /metrics."""
    status, text = worker.get("/metrics")
    assert status == 200
    return {
        sample.labels["probe"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if sample.name == "payments_probe_runs_total"
    }


async def flood(url: str, count: int) -> list[tuple[int, Any]]:
    """``count`` GETs of ``url``, all in flight at once: status and JSON (or text) of each."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def get() -> tuple[int, Any]:
            async with session.get(url) as response:
                if response.content_type == "application/json":
                    return response.status, await response.json()
                return response.status, await response.text()

        return await asyncio.gather(*(get() for _ in range(count)))


def test_a_thousand_concurrent_health_checks_cost_one_probe_each_and_scrapes_one_measure(
    stack: Stack, tmp_path: Path
) -> None:
    interval = 10.0
    with run_worker(stack, tmp_path, PROBE_CACHE_SECONDS=str(interval)) as worker:
        wait_for(lambda: health(worker)[0] == 200, timeout=90, what="/health healthy")
        time.sleep(interval + 0.5)  # the result the start-up probes left is stale now
        before = probe_runs(worker)
        started = time.monotonic()
        answers = asyncio.run(flood(worker.base_url + "/health", 1000))
        took = time.monotonic() - started
        after = probe_runs(worker)
        # /metrics too: its queried gauges are measured once per interval.
        time.sleep(interval + 0.5)
        scrapes = asyncio.run(flood(worker.base_url + "/metrics", 300))
        scraped = probe_runs(worker)

    assert took < interval  # else a second probe per interval would be fair
    assert [status for status, _ in scrapes] == [200] * 300
    assert all("payments_measured_age_seconds" in text for _, text in scrapes)
    assert scraped["metrics"] - after["metrics"] == 1
    assert [status for status, _ in answers] == [200] * 1000
    runs = {probe: after[probe] - before.get(probe, 0) for probe in ("database", "kafka", "redis")}
    assert runs == {"database": 1, "kafka": 1, "redis": 1}
    # Every answer says how old its result is: fresh from the one probe, and younger than the flood.
    ages = [body["age_seconds"] for _, body in answers]
    assert all(set(age) == {"database", "kafka", "redis"} for age in ages)
    assert all(0 <= value <= took for age in ages for value in age.values())
