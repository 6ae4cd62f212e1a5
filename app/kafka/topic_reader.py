"""Reading topics from the command line: a group-less consumer, bounded by end offsets.

Operator commands read a topic up to the end offsets seen when they start, so a
scan always ends, and records written while it runs (a replay's own dead
letters, say) are not part of it. Nothing is committed: no consumer group.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app import tls
from app.exceptions import DependencyUnavailable
from app.kafka.partitioner import murmur2
from app.settings import Settings

#: A progress line every this many records of a scan.
PROGRESS_EVERY = 50_000


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as Java, Faust and we use) picks."""
    return int(murmur2(key) & 0x7FFFFFFF) % partition_count


def kafka_unreachable(settings: Settings, exc: BaseException) -> DependencyUnavailable:
    """The error an operator sees when the broker does not answer."""
    where = ",".join(settings.kafka_brokers)
    return DependencyUnavailable(
        f"cannot reach Kafka at {where} ({exc!r}): is the broker up? "
        "(`make up`, then `scripts/stack status`; KAFKA_BROKERS names it)"
    )


async def partitions_of(
    consumer: AIOKafkaConsumer, topic: str, wait_seconds: float = 10
) -> list[TopicPartition]:
    """Every partition of ``topic``, from a fresh metadata answer; LookupError if none."""
    deadline = time.monotonic() + wait_seconds
    while True:
        # partitions_for_topic reads the client's cached metadata, which only
        # covers topics the client was asked about: subscribe-free, so ask.
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return [TopicPartition(topic, number) for number in sorted(partitions)]
        if time.monotonic() > deadline:
            raise LookupError(
                f"topic {topic} has no partitions: does it exist? (bin/kafka-topics --list)"
            )
        consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()


class TopicReader:
    """``async with TopicReader(settings, "dlq") as reader``: bounded scans of topics."""

    def __init__(self, settings: Settings, purpose: str) -> None:
        self.settings = settings
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=",".join(settings.kafka_brokers),
            client_id=f"{settings.kafka_client_id}-{purpose}",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=15_000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            **tls.kafka_options(settings),
        )
        self._started = False

    async def __aenter__(self) -> TopicReader:
        try:
            await self._consumer.start()
        except (KafkaError, OSError) as exc:
            await self._consumer.stop()
            rejected = await tls.kafka_certificate_rejected(self.settings)
            raise (rejected or kafka_unreachable(self.settings, exc)) from exc
        self._started = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def partitions(self, topic: str, wait_seconds: float = 10) -> list[TopicPartition]:
        """Every partition of ``topic`` (LookupError if it does not exist)."""
        return await partitions_of(self._consumer, topic, wait_seconds)

    async def bounds(
        self, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        """(first offset, end offset) of each partition, now."""
        firsts = await self._consumer.beginning_offsets(partitions)
        ends = await self._consumer.end_offsets(partitions)
        return {tp: (firsts[tp], ends[tp]) for tp in partitions}

    async def read(
        self,
        bounds: Mapping[TopicPartition, tuple[int, int]],
        progress: Callable[[int, int], None] | None = None,
    ) -> AsyncIterator[Any]:
        """Every record from each partition's first offset to its end offset in ``bounds``.

        ``progress(read, total)`` is called every :data:`PROGRESS_EVERY` records;
        ``total`` counts offsets, so a compacted topic ends below it.
        """
        consumer = self._consumer
        remaining = {tp for tp, (first, end) in bounds.items() if end > first}
        total = sum(end - first for first, end in bounds.values())
        if not remaining:
            return
        consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, bounds[tp][0])
        read = 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, messages in batches.items():
                end = bounds[tp][1]
                for message in messages:
                    if message.offset >= end:
                        break
                    read += 1
                    if progress is not None and read % PROGRESS_EVERY == 0:
                        progress(read, total)
                    yield message
            for tp in list(remaining):
                if await consumer.position(tp) >= bounds[tp][1]:
                    remaining.discard(tp)
