"""A small Kafka client that answers one question for /health: can we reach the broker?"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaClient
from mode import Service

from app import tls
from app.kafka.topics import required_topics
from app.settings import Settings


class KafkaProbe(Service):
    """Asks the brokers for cluster metadata and checks the service's topics exist.

    It keeps its own client so that a health check never waits behind the
    producer's queue or a consumer rebalance.
    """

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self._client: AIOKafkaClient | None = None
        # Two health requests at once must not both bootstrap (and one leak) a client.
        self._connecting = asyncio.Lock()
        super().__init__(**kwargs)

    async def on_stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def check(self) -> None:
        """Return when the broker answers and every topic exists; raise otherwise."""
        client = await self._connected_client()
        metadata = await client.fetch_all_metadata()
        missing = required_topics(self.settings.kafka_topic) - metadata.topics()
        if missing:
            raise LookupError(
                f"topics missing: {', '.join(sorted(missing))} (scripts/stack up creates them)"
            )

    async def _connected_client(self) -> AIOKafkaClient:
        async with self._connecting:
            if self._client is None:
                client = AIOKafkaClient(
                    bootstrap_servers=list(self.settings.kafka_brokers),
                    client_id=f"{self.settings.kafka_client_id}-health",
                    request_timeout_ms=5000,
                    **tls.kafka_options(self.settings),
                )
                try:
                    await client.bootstrap()
                except BaseException as exc:
                    await client.close()
                    if isinstance(exc, Exception):
                        rejected = await tls.kafka_certificate_rejected(self.settings)
                        if rejected is not None:
                            raise rejected from exc
                    raise
                self._client = client
            return self._client
