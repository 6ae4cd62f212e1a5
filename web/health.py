"""GET /health (the plan's shape), /health/live and /health/ready.

- ``/health``: 200 when Postgres, Kafka and Redis all answer, 503 naming the failed one.
- ``/health/live``: 200 while the worker's event loop answers; for a liveness probe
  (restart the worker when it fails). Never looks at dependencies: a Postgres
  outage must not restart every worker.
- ``/health/ready``: 200 once the worker has joined the consumer group (a partition
  assignment done, no rebalance under way), its tables are recovered, and the
  three dependencies answer; for a readiness probe (send traffic when it passes).
- ``/health/startup``: 503 until the memory cache is warmed (app/recording/cache_warming.py)
  and the tables are recovered, then 200 for good; for a startup probe (liveness and
  readiness are not asked before it passes). Never looks at dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from faust.web import Request, Response, View

from app.ops.health_report import HealthChecker
from app.recording.cache_warming import CacheWarming
from web.binding import bound

if TYPE_CHECKING:
    from faust.tables.manager import TableManager


class HealthView(View):
    """Reports database, kafka and redis as ok/error, the staging backlog and last run."""

    health: HealthChecker

    async def get(self, request: Request) -> Response:
        report = await self.health.report()
        status = 200 if report.status == "healthy" else 503
        return self.json(report.model_dump(mode="json"), status=status)


class LivenessView(View):
    """GET /health/live."""

    async def get(self, request: Request) -> Response:
        return self.json({"status": "alive"})


class ReadinessView(View):
    """GET /health/ready: assignment, table recovery and the dependency checks."""

    health: HealthChecker

    async def get(self, request: Request) -> Response:
        app = self.app  # Faust's own state: the group membership and the tables
        joined = app.rebalancing_count > 0 and not app.rebalancing
        recovery = cast("TableManager", app.tables).recovery
        recovered = recovery.completed.is_set() and not recovery.in_recovery
        report = await self.health.report()
        ready = joined and recovered and report.status == "healthy"
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {
                "partitions": "assigned" if joined else "waiting",
                "tables": "recovered" if recovered else "recovering",
                **report.checks.model_dump(mode="json"),
            },
            "errors": report.errors,
        }
        return self.json(body, status=200 if ready else 503)


class StartupView(View):
    """GET /health/startup: the cache warmed and the tables recovered once."""

    warming: CacheWarming

    async def get(self, request: Request) -> Response:
        recovery = cast("TableManager", self.app.tables).recovery
        recovered = recovery.completed.is_set()
        warmed = self.warming.done.is_set()
        started = warmed and recovered
        body = {
            "status": "started" if started else "starting",
            "checks": {
                "cache": "warmed" if warmed else "warming",
                "tables": "recovered" if recovered else "recovering",
            },
        }
        return self.json(body, status=200 if started else 503)


def register(app: Any, *, health: HealthChecker, warming: CacheWarming) -> None:
    """Route /health, /health/live, /health/ready and /health/startup."""
    app.page("/health")(bound(HealthView, health=health))
    app.page("/health/live")(LivenessView)
    app.page("/health/ready")(bound(ReadinessView, health=health))
    app.page("/health/startup")(bound(StartupView, warming=warming))
