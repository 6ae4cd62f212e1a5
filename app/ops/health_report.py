"""Health of the worker's dependencies, in the plan's /health shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel

from app.kafka.probe import KafkaProbe
from app.ops.recent import Recent
from app.storage import staging_table
from app.storage.database import Database
from app.storage.redis_connection import RedisConnection

log = logging.getLogger(__name__)

CheckState = Literal["ok", "error"]
Switch = Literal["enabled", "disabled"]
T = TypeVar("T")

#: A dependency slower than this is as good as down for a health check.
CHECK_TIMEOUT_SECONDS = 3.0


class Checks(BaseModel):
    database: CheckState
    kafka: CheckState
    redis: CheckState
    staging_backlog: int | None
    last_staging_run: str | None
    #: The rollout's switches, STAGING_ENABLED and WEBHOOKS_ENABLED (they never fail a check).
    staging: Switch = "enabled"
    webhooks: Switch = "enabled"


class HealthReport(BaseModel):
    status: Literal["healthy", "unhealthy"]
    checks: Checks
    #: Why each failed check failed, for the operator reading the response.
    errors: dict[str, str] = {}
    #: How old each probe's result is, in seconds (results are reused for PROBE_CACHE_SECONDS).
    age_seconds: dict[str, float] = {}


Probed = tuple[T | None, str | None]  # the probe's result, or why it failed


class HealthChecker:
    """Runs the three dependency checks at once, each bounded by a timeout.

    Each check's result is reused for ``max_age`` seconds (app/ops/recent.py), so a
    flood of probes costs one query per check and interval.
    """

    def __init__(
        self,
        database: Database,
        redis: RedisConnection,
        kafka: KafkaProbe,
        timeout: float = CHECK_TIMEOUT_SECONDS,
        *,
        staging_enabled: bool = True,
        webhooks_enabled: bool = True,
        max_age: float = 0.0,
    ) -> None:
        self.database = database
        self.redis = redis
        self.kafka = kafka
        self.timeout = timeout
        self.switches: dict[str, Switch] = {
            "staging": "enabled" if staging_enabled else "disabled",
            "webhooks": "enabled" if webhooks_enabled else "disabled",
        }
        self._staging: Recent[Probed[tuple[int, datetime | None]]] = Recent("database", max_age)
        self._kafka: Recent[Probed[None]] = Recent("kafka", max_age)
        self._redis: Recent[Probed[None]] = Recent("redis", max_age)

    async def report(self) -> HealthReport:
        database, kafka, redis = await asyncio.gather(
            self._staging.get(lambda: self._run("database", self._staging_figures)),
            self._kafka.get(lambda: self._run("kafka", self.kafka.check)),
            self._redis.get(lambda: self._run("redis", self._ping_redis)),
        )
        ((staging, database_error), database_age) = database
        ((_, kafka_error), kafka_age), ((_, redis_error), redis_age) = kafka, redis
        errors = {
            name: error
            for name, error in (
                ("database", database_error),
                ("kafka", kafka_error),
                ("redis", redis_error),
            )
            if error is not None
        }
        backlog, last_run = staging if staging is not None else (None, None)
        checks = Checks(
            database="error" if database_error else "ok",
            kafka="error" if kafka_error else "ok",
            redis="error" if redis_error else "ok",
            staging_backlog=backlog,
            last_staging_run=last_run.isoformat() if last_run else None,
            **self.switches,
        )
        status: Literal["healthy", "unhealthy"] = "unhealthy" if errors else "healthy"
        ages = {"database": database_age, "kafka": kafka_age, "redis": redis_age}
        return HealthReport(
            status=status,
            checks=checks,
            errors=errors,
            age_seconds={name: round(age, 3) for name, age in ages.items()},
        )

    async def _run(self, name: str, check: Callable[[], Awaitable[T]]) -> Probed[T]:
        try:
            return await asyncio.wait_for(check(), self.timeout), None
        except TimeoutError:
            error = f"no answer within {self.timeout:g} s"
        except Exception as exc:  # a health check reports every failure, it never raises
            error = f"{type(exc).__name__}: {exc}"[:300]
        log.warning("health check %s failed: %s", name, error)  # once per probe, not per answer
        return None, error

    async def _staging_figures(self) -> tuple[int, datetime | None]:
        return await staging_table.figures(self.database.pool)

    async def _ping_redis(self) -> None:
        if not await self.redis.client.ping():
            raise ConnectionError("PING did not answer PONG")
