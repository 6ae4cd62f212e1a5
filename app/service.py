"""The Faust app: settings, connections and views wired together, nothing started yet.

Start order matters: the database pool, Redis client and Kafka probe
are dependencies of the app, so mode starts them before the agents, tables and
timers that Faust adds on first start.
"""

from __future__ import annotations

import logging
from typing import Any, cast, get_args

import faust

from agents import (
    end_stalled_sessions,
    maintain_partitions,
    poll_staging,
    record_payments,
    relay_outbox,
)
from app.instruments import (
    DEAD_LETTERS,
    INTAKE_RECORDS_LOST,
    KAFKA_MESSAGES,
    REDIS_OPERATIONS,
    REDIS_UNAVAILABLE,
    TURNED_AWAY,
    WEBHOOK_SECONDS,
    faust_monitor,
)
from app.intake.guards import Guards
from app.intake.process_pool import ProcessPool
from app.intake.signatures import Verifier
from app.intake.webhook_counts import WebhookCounts, process_name
from app.kafka import faust_patches
from app.kafka.probe import KafkaProbe
from app.kafka.publisher import Publisher
from app.kafka.topics import DLQ, INTAKE, INTAKE_PARTITIONS
from app.kafka.transport import Transport
from app.models import DateWindow, DeadLetterReason
from app.ops import commands
from app.ops.health_report import HealthChecker
from app.ops.log_format import use_log_format
from app.ops.operator_audit import SecretAudit
from app.recording.cache_warming import CacheWarming
from app.recording.decisions import DecisionBoard, redis_cache_seconds
from app.recording.reference_cache import memory_cache
from app.settings import Settings
from app.storage.database import Database
from app.storage.redis_connection import RedisConnection
from app.tls import faust_credentials
from tables.references import References
from web import admin, health, metrics, stats, webhooks
from web.front import Fronts


class PaymentService(faust.App):
    """The worker: one per process, each with its own web port and data folder."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        options: dict[str, Any] = {
            "broker": settings.kafka_url,
            # TLS and SASL for Faust's consumer and producer, as for our own clients.
            "broker_credentials": faust_credentials(settings),
            "store": "rocksdb://",
            "datadir": settings.data_dir,
            "web_port": settings.port,
            "web_bind": settings.web_bind,
            # Static membership: a restarted worker takes its partitions back without a rebalance.
            "consumer_group_instance_id": settings.worker_id,
            # Faust identifies a worker in its assignment by this URL and asserts, on a
            # static-membership rejoin, that it is unchanged: tie it to WORKER_ID, not to
            # the host and port (which change when a pod or a test restarts the worker).
            # We never route requests between workers, so it need not be reachable.
            "canonical_url": f"http://{settings.worker_id}.payment-service",
            "topic_partitions": INTAKE_PARTITIONS,
            "broker_session_timeout": settings.kafka_session_timeout_seconds,
            # A standby consumes every changelog record of the partitions it stands by for:
            # with two workers that doubled the records each one handled (bench/staging).
            "table_standby_replicas": settings.table_standby_replicas,
            "topic_replication_factor": settings.kafka_replication_factor,
            "producer_acks": -1,
            # The record agent takes batches: let the consumer hand over enough records
            # per poll and buffer a few batches ahead (measured with bench/staging).
            "broker_max_poll_records": 4 * settings.record_batch_size,
            "stream_buffer_maxsize": 8 * settings.record_batch_size,
            # agent.ask and timers can otherwise hold up a clean shutdown (docs/architecture.md).
            "stream_wait_empty": False,
            # Faust's built-in pages would expose table contents and topology.
            "web_stats_enabled": False,
            "web_graph_enabled": False,
            "web_router_enabled": False,
            "web_tables_enabled": False,
            "autodiscover": False,
            "Worker": QuietWorker,
        }
        options.update(overrides)
        faust_patches.install()
        super().__init__(settings.kafka_client_id, **options)
        self.settings = settings
        if settings.enable_metrics:
            self.monitor = faust_monitor()
            _counters_from_zero(settings)
        self.database = Database(settings)
        self.redis = RedisConnection(settings)
        self.kafka_probe = KafkaProbe(settings)
        self.publisher = Publisher(settings)
        self.helpers = ProcessPool(settings.staging_helper_processes)
        self.decisions = DecisionBoard(
            self.redis,
            cache_seconds=redis_cache_seconds(settings),
            wait_seconds=settings.webhook_timeout_ms / 1000,
        )
        # One memory cache for the process: the record agent's and the views' (fronts have theirs).
        self.memory = memory_cache(settings)
        self.webhook_counts = WebhookCounts(settings, process_name("worker"))
        self.cache_warming = CacheWarming(self.database, self.memory, settings.cache_warm_hours)
        dependencies = (
            self.database,
            self.cache_warming,  # after the database; it warms in the background
            self.redis,
            self.kafka_probe,
            self.publisher,
            self.helpers,
            self.decisions,
            self.webhook_counts,
            SecretAudit(settings),
        )
        for dependency in dependencies:
            self.add_dependency(dependency)
        if settings.webhook_processes:
            self.add_dependency(Fronts(settings))
        measured = metrics.measured_gauges(settings)
        if settings.enable_metrics and settings.metrics_port:
            self.add_dependency(metrics.MetricsListener(self, settings, self.database, measured))
        self.health = HealthChecker(
            self.database,
            self.redis,
            self.kafka_probe,
            staging_enabled=settings.staging_enabled,
            webhooks_enabled=settings.webhooks_enabled,
            max_age=settings.probe_cache_seconds,
        )
        self.date_window = DateWindow.of(settings)
        faust_patches.read_settings_once(self)  # before the table and topics bind create_event
        self.references = References(self, settings, self.publisher)
        faust_patches.widen_producer_buffer(self, 4 * settings.record_batch_size)
        self.record_payments = record_payments.register(
            self,
            settings=settings,
            database=self.database,
            references=self.references,
            publisher=self.publisher,
            decisions=self.decisions,
            window=self.date_window,
            memory=self.memory,
            faults=_fault_hooks(settings),
        )
        poll_staging.register(
            self,
            settings=settings,
            database=self.database,
            publisher=self.publisher,
            window=self.date_window,
            helpers=self.helpers,
        )
        relay_outbox.register(
            self, settings=settings, database=self.database, publisher=self.publisher
        )
        maintain_partitions.register(self, settings=settings, database=self.database)
        end_stalled_sessions.register(self, settings=settings, database=self.database)
        self.verifier = Verifier(settings)
        self.guards = Guards(settings, self.redis)
        health.register(self, health=self.health, warming=self.cache_warming)
        metrics.register(self, settings=settings, database=self.database, measured=measured)
        stats.register(self, settings=settings, database=self.database)
        webhooks.register(
            self,
            ingress=webhooks.WorkerIngress(
                settings=settings,
                decisions=self.decisions,
                guards=self.guards,
                verifier=self.verifier,
                publisher=self.publisher,
                date_window=self.date_window,
                webhook_counts=self.webhook_counts,
                memory=self.memory,
            ),
        )
        admin.register(self, settings=settings)
        self.command(base=commands.Command)(commands.migrate)
        self.command(base=commands.Command)(commands.reconcile)
        self.command(*commands.PARTITIONS_OPTIONS, base=commands.Command)(commands.partitions)
        self.command(*commands.DLQ_OPTIONS, base=commands.Command)(commands.dlq)
        self.command(*commands.STAGING_OPTIONS, base=commands.Command)(commands.staging)
        self.command(*commands.REFERENCES_OPTIONS, base=commands.Command)(commands.references)
        self.command(*commands.TOKENS_OPTIONS, base=commands.Command)(commands.tokens)

    def _new_transport(self) -> Any:
        # Our transport refuses acks for messages Faust skipped (app/kafka/transport.py).
        return Transport(self.conf.broker_consumer, self)


class QuietWorker(faust.Worker):
    """Faust's worker without its terminal spinner, writing its logs in LOG_FORMAT.

    At LOG_LEVEL warning or above the spinner set the root logger to DEBUG (to
    spin on every record) and filtered at the handler: every debug call of
    aiokafka and Faust built a LogRecord nobody printed (py-spy: ~6% of a webhook
    worker). Logs go to files and collectors here, not to a terminal to animate.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        use_log_format(logger, cast(PaymentService, self.app).settings.log_format)


def _counters_from_zero(settings: Settings) -> None:
    """Export the alerts' counters at 0 from the start, for every label value they can take.

    A labelled counter has no series until its first increment, and ``increase()``
    over a series that starts at 1 is 0: the first dead letter, lost intake record or
    Redis failure would never fire its alert, and a dashboard would show no series.
    The same goes for the webhook answers PaymentsWebhooksTurnedAway counts (503, 408).
    """
    for reason in get_args(DeadLetterReason):
        DEAD_LETTERS.labels(reason)
    for topic in (INTAKE, settings.kafka_topic, DLQ):
        for result in ("ok", "failed"):
            KAFKA_MESSAGES.labels(topic, result)
    INTAKE_RECORDS_LOST.labels(INTAKE)
    for operation in REDIS_OPERATIONS:
        REDIS_UNAVAILABLE.labels(operation)
    for status in TURNED_AWAY:
        WEBHOOK_SECONDS.labels(status)


def _fault_hooks(settings: Settings) -> record_payments.FaultHooks | None:
    """FAULT_POINT's hooks for the record agent: tests only, so imported only when it is set."""
    if not settings.fault_point:
        return None
    from app import fault_points  # the one seam to the test-only hooks

    return fault_points.record_hooks(settings.fault_point)


def create_app(settings: Settings, **overrides: Any) -> PaymentService:
    """Build the app for ``settings``; ``overrides`` are Faust settings (tests use ``store``)."""
    return PaymentService(settings, **overrides)
