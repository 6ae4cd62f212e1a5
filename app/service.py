"""The Faust app: settings, connections and views wired together, nothing started yet.

Start order matters (STYLE.md): the database pool, Redis client and Kafka probe
are dependencies of the app, so mode starts them before the agents, tables and
timers that Faust adds on first start.
"""

from __future__ import annotations

from typing import Any

import faust

from app import commands
from app.database import Database
from app.health import HealthChecker
from app.kafka_probe import KafkaProbe
from app.redis_connection import RedisConnection
from app.settings import Settings
from app.topics import INTAKE_PARTITIONS
from web.health import HealthView


class PaymentService(faust.App):
    """The worker: one per process, each with its own web port and data folder."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        options: dict[str, Any] = {
            "broker": settings.kafka_url,
            "store": "rocksdb://",
            "datadir": settings.data_dir,
            "web_port": settings.port,
            "web_bind": settings.web_bind,
            # Static membership: a restarted worker takes its partitions back without a rebalance.
            "consumer_group_instance_id": settings.worker_id,
            "topic_partitions": INTAKE_PARTITIONS,
            "topic_replication_factor": settings.kafka_replication_factor,
            "producer_acks": -1,
            # agent.ask and timers can otherwise hold up a clean shutdown (DESIGN.md).
            "stream_wait_empty": False,
            # Faust's built-in pages would expose table contents and topology.
            "web_stats_enabled": False,
            "web_graph_enabled": False,
            "web_router_enabled": False,
            "web_tables_enabled": False,
            "autodiscover": False,
        }
        options.update(overrides)
        super().__init__(settings.kafka_client_id, **options)
        self.settings = settings
        self.database = Database(settings)
        self.redis = RedisConnection(settings)
        self.kafka_probe = KafkaProbe(settings)
        for dependency in (self.database, self.redis, self.kafka_probe):
            self.add_dependency(dependency)
        self.health = HealthChecker(self.database, self.redis, self.kafka_probe)
        self.page("/health")(HealthView)
        self.command()(commands.migrate)


def create_app(settings: Settings, **overrides: Any) -> PaymentService:
    """Build the app for ``settings``; ``overrides`` are Faust settings (tests use ``store``)."""
    return PaymentService(settings, **overrides)
