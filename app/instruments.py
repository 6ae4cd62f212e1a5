"""Prometheus metrics (``payments_`` prefix), summed over the worker and its webhook fronts.

The worker and its WEBHOOK_PROCESSES fronts count in prometheus-client's
multiprocess mode: each process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR, which ``python -m app worker`` sets to
``DATA_DIR/metrics`` (emptied at start) before prometheus-client is imported,
and which the fronts inherit. ``GET /metrics`` on the worker's port reads them
all (counters of a front that died still count) and adds what is measured when
asked: the staging backlog, the outbox, the Postgres pool, partitions, lag.
Faust's own sensors count under ``payments_faust_``. Without the
variable (unit tests, other commands) the default registry is used.

Labels are small fixed sets (status codes, sources, outcomes, reasons, topics,
layers, operations): never a reference, an account or a webhook id.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "exposition"]

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

#: Up to WEBHOOK_TIMEOUT_MS (5 s by default) and a little beyond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

WEBHOOK_SECONDS = Histogram(
    "payments_webhook_duration_seconds",
    "Webhook requests from routing to the answer, by HTTP status",
    ["status"],
    buckets=LATENCY_BUCKETS,
)
#: The statuses of webhooks turned away (busy, Kafka away, switched off; a body too slow):
#: exported at zero from the start for the alert PaymentsWebhooksTurnedAway.
TURNED_AWAY = ("503", "408")
DECISIONS = Counter(
    "payments_decisions_total",
    "Records decided, by source (staging, webhook) and outcome; each once, whichever layer"
    " answered it (the record agent, a webhook view from its memory or Redis cache, the"
    " staging poller's check for exact repeats)",
    ["source", "outcome"],
)
DEAD_LETTERS = Counter(
    "payments_dead_letters_total", "Records sent to the dead-letter topic, by reason", ["reason"]
)
REFERENCE_ANSWERS = Counter(
    "payments_reference_answers_total",
    "Where a known reference's answer came from: the RocksDB table, the Redis hot cache"
    " (webhook views) or Postgres",
    ["layer"],
)
CACHE_REQUESTS = Counter(
    "payments_cache_requests_total",
    "Look-ups of a known reference, by layer (memory: the process's LRU; redis: the hot cache;"
    " table: RocksDB; database: payment_references) and result (hit, miss)",
    ["layer", "result"],
)
KAFKA_MESSAGES = Counter(
    "payments_kafka_messages_total",
    "Messages our producer sent, by topic and result (ok: acknowledged; failed: not)",
    ["topic", "result"],
)
INTAKE_RECORDS_LOST = Counter(
    "payments_intake_records_lost_total",
    "Records a consumer group never processed because the topic's retention deleted them first"
    " (its committed offset was below the log start; the error log names the range)",
    ["topic"],
)
#: The Redis calls REDIS_UNAVAILABLE counts by (its ``operation`` label).
REDIS_OPERATIONS = ("claim", "remember", "stored", "listen", "post_decisions", "rate_limit")
REDIS_UNAVAILABLE = Counter(
    "payments_redis_unavailable_total",
    "Redis calls that failed; the service went on without them (answers 202, no replay check)",
    ["operation"],
)
STAGING_ROWS = Counter(
    "payments_staging_rows_total",
    "Staging rows the poller handled, by result (published, duplicate, invalid)",
    ["result"],
)
PARTITIONS_KEPT = Counter(
    "payments_partitions_kept_total",
    "Expired partitions maintenance kept instead of dropping, once per run: they hold rows"
    " recorded after the accepted window had closed on their month (see the error it logs)",
)
STALLED_SESSIONS_ENDED = Counter(
    "payments_db_stalled_sessions_ended_total",
    "Postgres sessions of this service a worker ended because they had waited mid-statement"
    " for their client past DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS (a frozen process's; the"
    " warning it logs names the session)",
)
PROBE_RUNS = Counter(
    "payments_probe_runs_total",
    "Dependency probes /health and /metrics ran (database, kafka, redis, metrics); the answers"
    " between runs reuse the last result (PROBE_CACHE_SECONDS)",
    ["probe"],
)
STAGING_BATCH_SECONDS = Histogram(
    "payments_staging_batch_duration_seconds",
    "Staging batches from claim to commit",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


@functools.cache
def faust_metrics() -> FaustMetrics:
    """Faust's own sensors (messages in and out, commits, rebalances, sends), ``payments_faust_``.

    Registered once per process: tests build several apps in one.
    """
    return FaustMetrics.create(REGISTRY, "payments_faust")


def faust_monitor() -> PrometheusMonitor:
    """A Faust monitor that also counts into :func:`faust_metrics`."""
    return LeanMonitor(metrics=faust_metrics())


class LeanMonitor(PrometheusMonitor):
    """Faust's Prometheus monitor without its bookkeeping per message and per event.

    Faust's monitor updates about a dozen samples for every message (in, active,
    per-partition offset, per-stream events and their runtime histogram, out) and
    every table key and send, each a write to a memory-mapped file in multiprocess
    mode, plus its own in-memory statistics: about a seventh of a worker's CPU in
    bench/staging. This keeps what operators read (messages in per topic, sends
    and send errors, commits and their latency, rebalances, offsets committed) and
    counts messages in through a child looked up once per topic.
    """

    def __init__(self, metrics: FaustMetrics) -> None:
        super().__init__(metrics=metrics)
        self._received_by_topic: dict[str, Any] = {}

    def _clear_partition_related_metrics(self) -> None:
        """At a rebalance: forget the partitions' offsets; drop their samples if possible.

        Faust removes the per-topic and per-partition samples at each rebalance. In
        multiprocess mode (the worker and its fronts) prometheus-client cannot remove
        a sample: it warned instead, one WARNING line per metric at every rebalance,
        and kept the sample. Elsewhere the samples go, and with them the children
        this monitor keeps per topic.
        """
        if os.environ.get(MULTIPROC_VARIABLE):
            self.tp_committed_offsets.clear()
            self.tp_read_offsets.clear()
            self.tp_end_offsets.clear()
            return
        super()._clear_partition_related_metrics()
        self._received_by_topic.clear()

    def track_tp_end_offset(self, tp: Any, offset: int) -> None:
        # Faust calls this for every message it fetches, with its partition's end offset
        # as of that fetch: the same value for a whole fetch. Set the gauge when it moves.
        if self.tp_end_offsets.get(tp) != offset:
            super().track_tp_end_offset(tp, offset)

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        child = self._received_by_topic.get(tp.topic)
        if child is None:
            child = self._metrics.messages_received_per_topics.labels(topic=tp.topic)
            self._received_by_topic[tp.topic] = child
        child.inc()

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        self._metrics.total_sent_messages.inc()

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        self._metrics.total_error_messages_sent.inc()


class _Measured(Collector):
    """Gauges measured when /metrics is asked, handed over ready-made."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def exposition(measured: list[Metric]) -> bytes:
    """The text for GET /metrics: every process's samples, then ``measured``."""
    if os.environ.get(MULTIPROC_VARIABLE):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    extra = CollectorRegistry()
    extra.register(_Measured(measured))
    return generate_latest(registry) + generate_latest(extra)
