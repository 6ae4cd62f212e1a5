"""HealthChecker with fakes: every failure is named, nothing raises, slow means down."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

from app.kafka.probe import KafkaProbe
from app.ops.health_report import HealthChecker
from app.storage.database import Database
from app.storage.redis_connection import RedisConnection


class FakePool:
    def __init__(self, error: Exception | None = None, delay: float = 0) -> None:
        self.error = error
        self.delay = delay
        self.queries = 0

    async def fetchrow(self, query: str) -> dict[str, Any]:
        self.queries += 1
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return {"backlog": 42, "last_run": datetime(2026, 11, 1, 12, 30)}  # noqa: DTZ001 (naive UTC column)


class FakeRedis:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def ping(self) -> bool:
        if self.error:
            raise self.error
        return True


class FakeKafka:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def check(self) -> None:
        if self.error:
            raise self.error


def checker(
    pool: FakePool | None = None,
    redis: FakeRedis | None = None,
    kafka: FakeKafka | None = None,
    timeout: float = 1.0,
    max_age: float = 0.0,
) -> HealthChecker:
    database = type("D", (), {"pool": pool or FakePool()})()
    connection = type("R", (), {"client": redis or FakeRedis()})()
    return HealthChecker(
        cast(Database, database),
        cast(RedisConnection, connection),
        cast(KafkaProbe, kafka or FakeKafka()),
        timeout=timeout,
        max_age=max_age,
    )


async def test_all_ok_is_healthy_in_the_plans_shape() -> None:
    report = await checker().report()
    shape = report.model_dump(mode="json")
    ages = shape.pop("age_seconds")
    assert set(ages) == {"database", "kafka", "redis"}
    assert all(0 <= age < 1 for age in ages.values())
    assert shape == {
        "status": "healthy",
        "checks": {
            "database": "ok",
            "kafka": "ok",
            "redis": "ok",
            "staging_backlog": 42,
            "last_staging_run": "2026-11-01T12:30:00",
            "staging": "enabled",
            "webhooks": "enabled",
        },
        "errors": {},
    }


async def test_a_failed_redis_is_named_and_the_rest_still_reported() -> None:
    report = await checker(redis=FakeRedis(ConnectionError("Connection refused"))).report()
    assert report.status == "unhealthy"
    assert (report.checks.database, report.checks.kafka, report.checks.redis) == (
        "ok",
        "ok",
        "error",
    )
    assert report.errors == {"redis": "ConnectionError: Connection refused"}
    assert report.checks.staging_backlog == 42


async def test_a_failed_database_has_no_staging_figures() -> None:
    report = await checker(pool=FakePool(OSError("refused"))).report()
    assert report.checks.database == "error"
    assert report.checks.staging_backlog is None
    assert report.checks.last_staging_run is None
    assert set(report.errors) == {"database"}


async def test_a_hanging_dependency_times_out_as_an_error() -> None:
    report = await checker(pool=FakePool(delay=5), timeout=0.05).report()
    assert report.checks.database == "error"
    assert report.errors["database"] == "no answer within 0.05 s"


async def test_every_dependency_down_names_all_three() -> None:
    report = await checker(
        pool=FakePool(OSError("a")),
        redis=FakeRedis(OSError("b")),
        kafka=FakeKafka(LookupError("topics missing: payment.intake")),
    ).report()
    assert report.status == "unhealthy"
    assert set(report.errors) == {"database", "kafka", "redis"}
    assert "payment.intake" in report.errors["kafka"]


async def test_the_rollout_switches_are_in_the_checks_and_fail_nothing() -> None:
    on = await checker().report()
    database = type("D", (), {"pool": FakePool()})()
    connection = type("R", (), {"client": FakeRedis()})()
    off = await HealthChecker(
        cast(Database, database),
        cast(RedisConnection, connection),
        cast(KafkaProbe, FakeKafka()),
        staging_enabled=False,
        webhooks_enabled=False,
    ).report()

    assert (on.checks.staging, on.checks.webhooks) == ("enabled", "enabled")
    assert (off.checks.staging, off.checks.webhooks) == ("disabled", "disabled")
    assert off.status == "healthy"


async def test_concurrent_reports_share_one_query_and_later_ones_reuse_it_with_its_age() -> None:
    pool = FakePool(delay=0.05)
    health = checker(pool=pool, max_age=30)
    reports = await asyncio.gather(*(health.report() for _ in range(200)))
    assert pool.queries == 1
    assert {report.checks.staging_backlog for report in reports} == {42}
    await asyncio.sleep(0.1)
    later = await health.report()
    assert pool.queries == 1
    assert 0.1 <= later.age_seconds["database"] < 30


async def test_without_max_age_every_report_queries() -> None:
    pool = FakePool()
    health = checker(pool=pool)
    await health.report()
    await health.report()
    assert pool.queries == 2
