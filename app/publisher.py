"""The producer for our own topics: idempotent, acks from all in-sync replicas.

Faust's producer turns idempotence on only inside transactions, and its
``send_soon`` buffer hides when a record is durable. Intake records, events and
dead letters need both, so they go through this producer; Faust's own keeps the
table changelogs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from mode import Service

from app.exceptions import PublishFailed
from app.settings import Settings

log = logging.getLogger(__name__)

Message = tuple[bytes | None, bytes]


class Publisher(Service):
    """Sends batches of keyed messages and returns once the broker has them all."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=",".join(self.settings.kafka_brokers),
            client_id=f"{self.settings.kafka_client_id}-publisher",
            acks="all",
            enable_idempotence=True,
            # A few ms of linger turns a batch of sends into a few produce requests.
            linger_ms=5,
            max_batch_size=512 * 1024,
            request_timeout_ms=30_000,
        )
        await producer.start()
        self._producer = producer

    async def on_stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(
        self, topic: str, messages: Sequence[Message], partitions: Sequence[int] | None = None
    ) -> list[Any]:
        """Send every message and wait for all acks; raise :class:`PublishFailed` otherwise.

        Sends are not awaited one by one: they go into the producer's batches
        together and the acks are gathered at the end. ``partitions`` (one per
        message) overrides the key's partition. Returns each message's metadata.
        """
        if not messages:
            return []
        producer = self._producer
        if producer is None:
            raise PublishFailed("the publisher is not started")
        deliveries: list[asyncio.Future[Any]] = []
        try:
            send = producer.send
            if partitions is None:
                for key, value in messages:
                    deliveries.append(await send(topic, value, key=key))
            else:
                for (key, value), partition in zip(messages, partitions, strict=True):
                    deliveries.append(await send(topic, value, key=key, partition=partition))
        except KafkaError as exc:
            await asyncio.gather(*deliveries, return_exceptions=True)
            raise PublishFailed(f"Kafka refused a send to {topic}: {exc!r}") from exc
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            raise PublishFailed(
                f"Kafka did not acknowledge {len(failures)} of {len(messages)} "
                f"messages to {topic}: {failures[0]!r}"
            ) from failures[0]
        return results
