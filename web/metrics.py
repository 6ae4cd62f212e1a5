"""GET /metrics: Prometheus text for the worker and its fronts, plus gauges measured on request."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import asyncpg
from aiohttp import web
from faust.web import Request, Response, View
from prometheus_client.core import Metric

from app.metrics import CONTENT_TYPE_LATEST, exposition, gauge

if TYPE_CHECKING:
    from app.service import PaymentService

log = logging.getLogger(__name__)

#: What Postgres says at scrape time: the staging backlog and the unsent events.
MEASURE = """
SELECT (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS staging_backlog,
       coalesce(sum(cardinality(event_ids)), 0) AS outbox_events,
       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS outbox_oldest_seconds
FROM payment_service.outbox
"""


class MetricsView(View):
    """Counters and histograms of every process; Postgres and pool gauges measured now."""

    async def get(self, request: Request) -> Response:
        app = cast("PaymentService", self.app)
        if not app.settings.enable_metrics:
            body = {"error": "not_found", "message": "ENABLE_METRICS is off"}
            return self.json(body, status=404)
        # aiohttp's content_type argument refuses the charset Prometheus' type carries.
        text = exposition(await _measure(app))
        response = web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})
        return cast(Response, response)  # Faust's aiohttp driver hands it over as it is


async def _measure(app: PaymentService) -> list[Metric]:
    pool = app.database.pool
    measured: list[Metric] = [
        gauge("payments_db_pool_size", "Postgres connections open in the pool", pool.get_size()),
        gauge(
            "payments_db_pool_in_use",
            "Postgres connections lent out of the pool",
            pool.get_size() - pool.get_idle_size(),
        ),
        gauge("payments_db_pool_max", "DB_POOL_MAX", pool.get_max_size()),
    ]
    try:
        row = await pool.fetchrow(MEASURE, timeout=5)
    except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
        log.warning("metrics: Postgres gauges left out: %r", exc)
        return measured
    assert row is not None  # an aggregate always returns a row
    return [
        *measured,
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
