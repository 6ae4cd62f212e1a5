"""Health of the worker's dependencies, in the plan's /health shape."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Literal, TypeVar

from pydantic import BaseModel

from app.kafka.probe import KafkaProbe
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


class HealthChecker:
    """Runs the three dependency checks at once, each bounded by a timeout."""

    def __init__(
        self,
        database: Database,
        redis: RedisConnection,
        kafka: KafkaProbe,
        timeout: float = CHECK_TIMEOUT_SECONDS,
        *,
        staging_enabled: bool = True,
        webhooks_enabled: bool = True,
    ) -> None:
        self.database = database
        self.redis = redis
        self.kafka = kafka
        self.timeout = timeout
        self.switches: dict[str, Switch] = {
            "staging": "enabled" if staging_enabled else "disabled",
            "webhooks": "enabled" if webhooks_enabled else "disabled",
        }

    async def report(self) -> HealthReport:
        (staging, database_error), (_, kafka_error), (_, redis_error) = await asyncio.gather(
            self._run(self._staging_figures),
            self._run(self.kafka.check),
            self._run(self._ping_redis),
        )
        errors = {
            name: error
            for name, error in (
                ("database", database_error),
                ("kafka", kafka_error),
                ("redis", redis_error),
            )
            if error is not None
        }
        for name, error in errors.items():
            log.warning("health check %s failed: %s", name, error)
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
        return HealthReport(status=status, checks=checks, errors=errors)

    async def _run(self, check: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
        try:
            return await asyncio.wait_for(check(), self.timeout), None
        except TimeoutError:
            return None, f"no answer within {self.timeout:g} s"
        except Exception as exc:  # a health check reports every failure, it never raises
            return None, f"{type(exc).__name__}: {exc}"[:300]

    async def _staging_figures(self) -> tuple[int, datetime | None]:
        return await staging_table.figures(self.database.pool)

    async def _ping_redis(self) -> None:
        if not await self.redis.client.ping():
            raise ConnectionError("PING did not answer PONG")
