"""GET /metrics: Prometheus text for the worker and its fronts, plus gauges measured on request.

Served on PORT with the other views, and on METRICS_PORT by a listener of its own
(:class:`MetricsListener`, the plan's 9090), so a scraper can be let in to that port
alone. Both answer alike: ENABLE_METRICS, METRICS_ALLOWLIST and METRICS_TOKEN_REQUIRED
hold on each.

The gauges that take queries (Postgres figures, partitions, consumer lag) are
measured at most once per PROBE_CACHE_SECONDS (app/ops/recent.py), and
``payments_measured_age_seconds`` says how old they are.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
from aiohttp import web
from faust.types import TP
from faust.web import Request, Response, View
from mode import Service
from prometheus_client.core import GaugeMetricFamily, Metric

from app.exceptions import PaymentsError
from app.instruments import CONTENT_TYPE_LATEST, exposition, gauge
from app.intake.guards import address
from app.kafka.topics import INTAKE
from app.ops.authorization import Refusal, authorize
from app.ops.recent import Recent
from app.recording import payment_store
from app.settings import IPNetwork, Settings
from app.storage import partitions, staging_table
from app.storage.database import Database
from web.binding import bound

log = logging.getLogger(__name__)


class MetricsView(View):
    """Counters and histograms of every process; the pool's gauges now, the queried ones recent."""

    settings: Settings
    database: Database
    measured: Recent[list[Metric]]

    async def get(self, request: Request) -> Response:
        http = cast(web.Request, request)  # Faust's aiohttp driver hands over aiohttp's request
        answer = await metrics_answer(self.settings, self.database, self.measured, self.app, http)
        return cast(Response, answer)  # and takes aiohttp's response as it is


def measured_gauges(settings: Settings) -> Recent[list[Metric]]:
    """The queried gauges, measured at most once per PROBE_CACHE_SECONDS for both ports."""
    return Recent("metrics", settings.probe_cache_seconds)


async def metrics_answer(
    settings: Settings,
    database: Database,
    measured: Recent[list[Metric]],
    app: Any,
    request: web.Request,
) -> web.Response:
    """The answer to GET /metrics, on PORT or METRICS_PORT: refusals first, then the text."""
    if not settings.enable_metrics:
        body = {"error": "not_found", "message": "ENABLE_METRICS is off"}
        return web.json_response(body, status=404)
    allowlist = settings.metrics_allowlist
    if allowlist and not _listed(request.remote, allowlist):
        body = {"error": "forbidden", "message": "this address is not in METRICS_ALLOWLIST"}
        return web.json_response(body, status=403)
    if settings.metrics_token_required:
        found = authorize(settings, request.headers.get("Authorization"), "viewer")
        if isinstance(found, Refusal):
            return web.json_response(found.body(), status=found.status, headers=found.headers())
    queried, age = await measured.get(lambda: _query(settings, database, app.consumer))
    age_gauge = gauge(
        "payments_measured_age_seconds",
        "Age of the gauges measured in Postgres and Kafka (reused for PROBE_CACHE_SECONDS)",
        age,
    )
    text = exposition([*_pool(database), *queried, age_gauge])
    # aiohttp's content_type argument refuses the charset Prometheus' type carries.
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})


class MetricsListener(Service):
    """GET /metrics on METRICS_PORT, a listener of its own beside the worker's PORT."""

    def __init__(
        self,
        app: Any,
        settings: Settings,
        database: Database,
        measured: Recent[list[Metric]],
        **kwargs: Any,
    ) -> None:
        self.app = app
        self.settings = settings
        self.database = database
        self.measured = measured
        self._runner: web.AppRunner | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        application = web.Application()
        application.router.add_get("/metrics", self._get)
        runner = web.AppRunner(application, access_log=None, handle_signals=False)
        await runner.setup()
        bind, port = self.settings.web_bind, self.settings.metrics_port
        try:
            await web.TCPSite(runner, bind, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise MetricsPortTaken(
                f"cannot serve /metrics on {bind}:{port} ({exc.strerror}): set METRICS_PORT "
                "to a free port, or 0 to serve /metrics on PORT only"
            ) from exc
        self._runner = runner
        log.info("/metrics also on port %s (METRICS_PORT)", port)

    async def on_stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _get(self, request: web.Request) -> web.Response:
        return await metrics_answer(self.settings, self.database, self.measured, self.app, request)


class MetricsPortTaken(PaymentsError):
    """METRICS_PORT cannot be listened on; choose another (or 0: /metrics on PORT only)."""


def _listed(peer: str | None, networks: Sequence[IPNetwork]) -> bool:
    ip = address(peer)  # an IPv4-mapped IPv6 peer is its IPv4 address
    return ip is not None and any(ip in network for network in networks)


def _pool(database: Database) -> list[Metric]:
    """The Postgres pool's gauges: local figures, read on every scrape."""
    pool = database.pool
    return [
        gauge("payments_db_pool_size", "Postgres connections open in the pool", pool.get_size()),
        gauge(
            "payments_db_pool_in_use",
            "Postgres connections lent out of the pool",
            pool.get_size() - pool.get_idle_size(),
        ),
        gauge("payments_db_pool_max", "DB_POOL_MAX", pool.get_max_size()),
    ]


async def _query(settings: Settings, database: Database, consumer: Any) -> list[Metric]:
    """The gauges that take queries: Postgres figures, partitions, consumer lag."""
    try:
        async with database.pool.acquire(timeout=5) as connection:
            backlog = await asyncio.wait_for(staging_table.backlog(connection), 5)
            outbox = await asyncio.wait_for(payment_store.outbox_figures(connection), 5)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        log.warning("metrics: Postgres gauges left out: %r", exc)
        return []
    return [
        *await _partitions(settings, database),
        *await _lag(consumer),
        gauge("payments_staging_backlog", "Staging rows not processed yet", backlog),
        gauge(
            "payments_outbox_events",
            "Events committed but not yet acknowledged by Kafka",
            outbox["events"],
        ),
        gauge(
            "payments_outbox_oldest_age_seconds",
            "Age of the oldest unsent event (0: none)",
            float(outbox["oldest_seconds"]),
        ),
    ]


async def _partitions(settings: Settings, database: Database) -> list[Metric]:
    """Each month's partition size, its planned budget, and the months prepared ahead."""
    try:
        async with database.pool.acquire(timeout=5) as connection:
            found = await partitions.list_partitions(connection)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        log.warning("metrics: partition gauges left out: %r", exc)
        return []
    sizes = GaugeMetricFamily(
        "payments_partition_bytes",
        "Size of each monthly partition of payments (table, indexes, TOAST)",
        labels=["partition"],
    )
    rows = GaugeMetricFamily(
        "payments_partition_rows",
        "Rows in each monthly partition (Postgres' estimate after ANALYZE)",
        labels=["partition"],
    )
    for partition in found:
        sizes.add_metric([partition.name], partition.bytes)
        rows.add_metric([partition.name], partition.rows_estimate)
    current = datetime.now(UTC).date().replace(day=1)
    ahead = sum(1 for partition in found if partition.month > current)
    return [
        sizes,
        rows,
        gauge(
            "payments_partition_budget_bytes",
            "PARTITION_BUDGET_BYTES: the size one month's partition is planned for",
            settings.partition_budget_bytes,
        ),
        gauge(
            "payments_partitions_ahead_months",
            "Monthly partitions that exist after the current month",
            ahead,
        ),
    ]


async def _lag(consumer: Any) -> list[Metric]:
    """Per assigned intake partition: the log end offset minus this worker's committed offset."""
    assigned = sorted(tp for tp in consumer.assignment() if tp.topic == INTAKE)
    family = GaugeMetricFamily(
        "payments_consumer_lag",
        "Intake records not yet committed by the record agent, per partition this worker owns",
        labels=["topic", "partition"],
    )
    if not assigned:
        return [family]
    try:
        ends = await asyncio.wait_for(consumer.highwaters(*assigned), timeout=5)
    except Exception as exc:  # any Kafka client error: the gauge is left out, not the page
        log.warning("metrics: consumer lag left out: %r", exc)
        return []
    # Faust keeps the offsets it committed (the next offset to read) here; no public accessor.
    # It is set at assignment from the group's commits (None: nothing committed yet; left out).
    committed: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    for tp in assigned:
        end, done = ends.get(tp), committed.get(tp)
        if end is not None and done is not None:
            family.add_metric([tp.topic, str(tp.partition)], max(end - done, 0))
    return [family]


def register(
    app: Any, *, settings: Settings, database: Database, measured: Recent[list[Metric]]
) -> None:
    """Route /metrics; ``measured`` is shared with the METRICS_PORT listener."""
    view = bound(MetricsView, settings=settings, database=database, measured=measured)
    app.page("/metrics")(view)
