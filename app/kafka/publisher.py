"""The producer for our own topics: idempotent, acks from all in-sync replicas.

Faust's producer turns idempotence on only inside transactions, and its
``send_soon`` buffer hides when a record is durable. Intake records, events and
dead letters need both, so they go through this producer; Faust's own keeps the
table changelogs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from mode import Service

from app import tls
from app.exceptions import PublishFailed
from app.instruments import KAFKA_MESSAGES
from app.kafka.partitioner import Partitioner
from app.settings import Settings

log = logging.getLogger(__name__)

Message = tuple[bytes | None, bytes]

#: Errors after which the broker will refuse every later batch of this producer id: the
#: idempotent producer's sequence for a partition is out of step (a batch failed after
#: its sequence number was taken, e.g. NotLeaderForPartition while a topic's leader
#: moved). Retrying with the same producer fails the same way for ever; a new producer
#: (a new id, sequences from 0) does not. Found stalling the record agent on a DLQ send.
BROKEN_SEQUENCE = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    ProducerFenced,
)


#: aiokafka's max_batch_size: the bytes a record batch may hold. KAFKA_BATCH_SIZE counts
#: records (the plan's meaning); a batch ends at whichever limit it reaches first.
MAX_BATCH_BYTES = 512 * 1024


class Publisher(Service):
    """Sends batches of keyed messages and returns once the broker has them all."""

    def __init__(self, settings: Settings, name: str = "publisher", **kwargs: Any) -> None:
        self.settings = settings
        self.name = name
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = Partitioner()
        self._replacing = asyncio.Lock()
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        if self._producer is not None:
            return
        self._producer = await self._new_producer()

    async def _new_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=",".join(self.settings.kafka_brokers),
            client_id=f"{self.settings.kafka_client_id}-{self.name}",
            acks="all",
            enable_idempotence=True,
            # KAFKA_LINGER_MS (0): a lone webhook's intake record, and a small batch's
            # events, waited the whole linger (5 ms each, on every webhook's path); with
            # one request in flight per broker, sends made meanwhile still go together.
            linger_ms=self.settings.kafka_linger_ms,
            max_batch_size=MAX_BATCH_BYTES,
            request_timeout_ms=30_000,
            **tls.kafka_options(self.settings),
        )
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            rejected = await tls.kafka_certificate_rejected(self.settings)
            if rejected is not None:
                raise rejected from exc
            raise
        return producer

    async def _restarted(self) -> AIOKafkaProducer:
        """A producer after a replacement that could not start one (Kafka was away)."""
        if not self.started:
            raise PublishFailed("the publisher is not started")
        async with self._replacing:
            if self._producer is None:
                try:
                    self._producer = await self._new_producer()
                except KafkaError as exc:
                    raise PublishFailed(f"{self.name}: no Kafka producer: {exc!r}") from exc
            return self._producer

    async def _replace(self, broken: AIOKafkaProducer, error: BaseException) -> None:
        """Swap ``broken`` for a new producer (once, however many sends saw it fail)."""
        async with self._replacing:
            if id(self._producer) != id(broken):  # (identity; `is not` would narrow the type)
                return  # replaced already
            log.warning(
                "%s: Kafka refuses this producer's sequence (%r); starting a new producer",
                self.name,
                error,
            )
            self._producer = None
            try:
                await broken.stop()
            except KafkaError as exc:
                log.info("%s: stopping the old producer: %r", self.name, exc)
            try:
                self._producer = await self._new_producer()
            except KafkaError as exc:
                # The next publish starts one (and says so if Kafka is still away).
                log.warning("%s: the new producer did not start yet: %r", self.name, exc)

    async def on_stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(
        self, topic: str, messages: Sequence[Message], partitions: Sequence[int] | None = None
    ) -> dict[int, int]:
        """Send every message and wait for all acks; raise :class:`PublishFailed` otherwise.

        Messages go out as one record batch per partition (aiokafka's batch API),
        not one send and one future each: per-message sends were a tenth of the
        record agent's time (bench/staging). Order within a partition is kept.
        ``partitions`` (one per message) overrides the key's partition, which is
        otherwise the Java client's (murmur2 of the key), as Faust and Kafka's
        tools compute it. Returns the last offset written in each partition.
        """
        if not messages:
            return {}
        producer = self._producer or await self._restarted()
        # aiokafka refreshes metadata for the topics its client tracks (every topic while
        # it tracks none), and ``send`` tracks a topic only when its partitions are
        # unknown. A topic first seen in an every-topic refresh thus leaves the metadata
        # as soon as another topic is tracked; its batches then wait for a leader, the
        # sender asking for metadata in a busy loop (thousands of connects a second with
        # the broker down), until request_timeout_ms fails them (NotLeaderForPartition).
        # Found stalling the record agent's first events for 30 s. A tracked topic is a no-op.
        await producer.client.add_topic(topic)
        deliveries: list[tuple[asyncio.Future[Any], int]] = []
        try:
            if partitions is None:
                partitions = await self._partitions_for_keys(producer, topic, messages)
            by_partition: dict[int, list[Message]] = {}
            for message, partition in zip(messages, partitions, strict=True):
                by_partition.setdefault(partition, []).append(message)
            for partition, group in by_partition.items():
                if len(group) == 1:
                    # A lone message joins the partition's open batch. Its own batch would
                    # queue behind every other pending one, and aiokafka's add_batch runs
                    # out of time fast when many wait (200 concurrent webhooks for one key
                    # got KafkaTimeoutError within a second).
                    key, value = group[0]
                    delivery = await producer.send(topic, value, key=key, partition=partition)
                    deliveries.append((delivery, 1))
                    continue
                for batch, count in _batches(producer, group, self.settings.kafka_batch_size):
                    delivery = await producer.send_batch(batch, topic, partition=partition)
                    deliveries.append((delivery, count))
        except KafkaError as exc:
            await asyncio.gather(*(delivery for delivery, _ in deliveries), return_exceptions=True)
            KAFKA_MESSAGES.labels(topic, "failed").inc(len(messages))
            if isinstance(exc, BROKEN_SEQUENCE):
                await self._replace(producer, exc)
            raise PublishFailed(f"Kafka refused a send to {topic}: {exc!r}") from exc
        results = await asyncio.gather(
            *(delivery for delivery, _ in deliveries), return_exceptions=True
        )
        failures = [
            (count, result)
            for (_, count), result in zip(deliveries, results, strict=True)
            if isinstance(result, BaseException)
        ]
        unacknowledged = sum(count for count, _ in failures)
        KAFKA_MESSAGES.labels(topic, "ok").inc(len(messages) - unacknowledged)
        if failures:
            KAFKA_MESSAGES.labels(topic, "failed").inc(unacknowledged)
            first = failures[0][1]
            broken = next((e for _, e in failures if isinstance(e, BROKEN_SEQUENCE)), None)
            if broken is not None:
                await self._replace(producer, broken)
            raise PublishFailed(
                f"Kafka did not acknowledge {len(failures)} of {len(deliveries)} "
                f"batches to {topic}: {first!r}"
            ) from first
        last: dict[int, int] = {}
        for (_, count), metadata in zip(deliveries, results, strict=True):
            assert not isinstance(metadata, BaseException)  # failures raised above
            end = metadata.offset + count - 1
            last[metadata.partition] = max(end, last.get(metadata.partition, end))
        return last

    async def _partitions_for_keys(
        self, producer: AIOKafkaProducer, topic: str, messages: Sequence[Message]
    ) -> list[int]:
        everyone = sorted(await producer.partitions_for(topic))
        choose = self._partitioner
        return [choose(key, everyone) for key, _ in messages]


def _batches(
    producer: AIOKafkaProducer, messages: list[Message], limit: int
) -> Iterator[tuple[Any, int]]:
    """Record batches holding ``messages`` in order, each with its message count.

    A batch holds at most ``limit`` messages (KAFKA_BATCH_SIZE) and MAX_BATCH_BYTES.
    """
    batch, count = producer.create_batch(), 0
    for key, value in messages:
        if count == limit:
            yield batch, count
            batch, count = producer.create_batch(), 0
        if batch.append(key=key, value=value, timestamp=None) is None:
            if count == 0:
                raise ValueError(f"a message of {len(value)} bytes does not fit in a batch")
            yield batch, count
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a message of {len(value)} bytes does not fit in a batch")
        count += 1
    if count:
        yield batch, count
