"""GET /metrics: Prometheus text for the worker and its fronts, plus gauges measured on request.

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
from prometheus_client.core import GaugeMetricFamily, Metric

from app.instruments import CONTENT_TYPE_LATEST, exposition, gauge
from app.intake.guards import address
from app.kafka.topics import INTAKE
from app.ops.authorization import Caller
from app.ops.recent import Recent
from app.settings import IPNetwork, Settings
from app.storage import partitions
from app.storage.database import Database
from web.access import caller_or_refusal
from web.binding import bound

log = logging.getLogger(__name__)

#: What Postgres says at scrape time: the staging backlog and the unsent events.
MEASURE = """
SELECT (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS staging_backlog,
       coalesce(sum(cardinality(event_ids)), 0) AS outbox_events,
       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS outbox_oldest_seconds
FROM payment_service.outbox
"""


class MetricsView(View):
    """Counters and histograms of every process; the pool's gauges now, the queried ones recent."""

    settings: Settings
    database: Database
    measured: Recent[list[Metric]]

    async def get(self, request: Request) -> Response:
        settings = self.settings
        if not settings.enable_metrics:
            body = {"error": "not_found", "message": "ENABLE_METRICS is off"}
            return self.json(body, status=404)
        allowlist = settings.metrics_allowlist
        if allowlist and not _listed(cast(web.Request, request).remote, allowlist):
            body = {"error": "forbidden", "message": "this address is not in METRICS_ALLOWLIST"}
            return self.json(body, status=403)
        if settings.metrics_token_required:
            caller = caller_or_refusal(self, settings, request, "viewer")
            if not isinstance(caller, Caller):
                return caller
        queried, age = await self.measured.get(
            lambda: _query(settings, self.database, self.app.consumer)
        )
        age_gauge = gauge(
            "payments_measured_age_seconds",
            "Age of the gauges measured in Postgres and Kafka (reused for PROBE_CACHE_SECONDS)",
            age,
        )
        text = exposition([*_pool(self.database), *queried, age_gauge])
        # aiohttp's content_type argument refuses the charset Prometheus' type carries.
        response = web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})
        return cast(Response, response)  # Faust's aiohttp driver hands it over as it is


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
        row = await database.pool.fetchrow(MEASURE, timeout=5)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        log.warning("metrics: Postgres gauges left out: %r", exc)
        return []
    assert row is not None  # an aggregate always returns a row
    return [
        *await _partitions(settings, database),
        *await _lag(consumer),
        gauge("payments_staging_backlog", "Staging rows not processed yet", row["staging_backlog"]),
        gauge(
            "payments_outbox_events",
            "Events committed but not yet acknowledged by Kafka",
            row["outbox_events"],
        ),
        gauge(
            "payments_outbox_oldest_age_seconds",
            "Age of the oldest unsent event (0: none)",
            float(row["outbox_oldest_seconds"]),
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


def register(app: Any, *, settings: Settings, database: Database) -> None:
    """Route /metrics."""
    measured: Recent[list[Metric]] = Recent("metrics", settings.probe_cache_seconds)
    view = bound(MetricsView, settings=settings, database=database, measured=measured)
    app.page("/metrics")(view)
