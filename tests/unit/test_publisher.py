"""The publisher replaces a producer whose idempotent sequence Kafka no longer accepts.

Its fake producer also checks that every topic is tracked for metadata before a send to it
(tests/integration/test_publisher.py shows what happens otherwise).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import NotLeaderForPartitionError, OutOfOrderSequenceNumber

from app.exceptions import PublishFailed
from app.kafka.publisher import Publisher
from app.settings import Settings


class FakeClient:
    """The producer's metadata client: which topics it tracks."""

    def __init__(self) -> None:
        self.topics: set[str] = set()

    def add_topic(self, topic: str) -> asyncio.Future[bool]:
        self.topics.add(topic)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done


class FakeProducer:
    """Acknowledges sends, or fails them with the errors it is given, in order."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.sent: list[bytes] = []
        self.stopped = False
        self.client = FakeClient()

    async def send(self, topic: str, value: bytes, key: Any, partition: int) -> asyncio.Future[Any]:
        assert topic in self.client.topics, "sent to a topic the metadata may drop"
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.errors:
            done.set_exception(self.errors.pop(0))
        else:
            self.sent.append(value)
            done.set_result(
                type("Meta", (), {"offset": len(self.sent) - 1, "partition": partition})
            )
        return done

    async def stop(self) -> None:
        self.stopped = True


async def test_a_broken_sequence_gets_a_new_producer_and_the_retry_goes_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What a moving partition leader did to the record agent's DLQ sends: one
    # NotLeaderForPartition, then OutOfOrderSequenceNumber on every retry, for ever.
    broken = FakeProducer([NotLeaderForPartitionError(), OutOfOrderSequenceNumber()] * 50)
    fresh = FakeProducer([])
    made = iter([broken, fresh])

    async def new_producer(self: Publisher) -> FakeProducer:
        return next(made)

    monkeypatch.setattr(Publisher, "_new_producer", new_producer)
    publisher = Publisher(Settings())
    await publisher.start()
    try:
        message = [(b"REF-1", b"letter")]
        with pytest.raises(PublishFailed, match="NotLeaderForPartition"):
            await publisher.publish("payment.intake.dlq", message, [0])
        with pytest.raises(PublishFailed, match="OutOfOrderSequenceNumber"):
            await publisher.publish("payment.intake.dlq", message, [0])
        assert broken.stopped
        assert await publisher.publish("payment.intake.dlq", message, [0]) == {0: 0}
        assert fresh.sent == [b"letter"]
    finally:
        await publisher.stop()


async def test_other_failures_keep_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = FakeProducer([NotLeaderForPartitionError()])

    async def new_producer(self: Publisher) -> FakeProducer:
        return producer

    monkeypatch.setattr(Publisher, "_new_producer", new_producer)
    publisher = Publisher(Settings())
    await publisher.start()
    try:
        with pytest.raises(PublishFailed):
            await publisher.publish("payment.events", [(b"k", b"v")], [3])
        assert not producer.stopped
        assert await publisher.publish("payment.events", [(b"k", b"v")], [3]) == {3: 0}
    finally:
        await publisher.stop()


class BatchingProducer(FakeProducer):
    """Also takes record batches (aiokafka's batch API), remembering each one's messages."""

    def __init__(self) -> None:
        super().__init__([])
        self.batches: list[list[bytes]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        assert topic in self.client.topics, "sent to a topic the metadata may drop"
        self.batches.append(batch.values)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(type("Meta", (), {"offset": 0, "partition": partition}))
        return done


class FakeBatch:
    """A record batch with room for any number of messages (the byte limit is aiokafka's)."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    def append(self, key: bytes | None, value: bytes, timestamp: None) -> object:
        self.values.append(value)
        return object()


async def test_kafka_batch_size_is_the_records_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = BatchingProducer()

    async def new_producer(self: Publisher) -> BatchingProducer:
        return producer

    monkeypatch.setattr(Publisher, "_new_producer", new_producer)
    publisher = Publisher(Settings(kafka_batch_size=3))
    await publisher.start()
    try:
        messages = [(b"REF", str(n).encode()) for n in range(7)]
        await publisher.publish("payment.intake", messages, [0] * 7)
    finally:
        await publisher.stop()
    assert producer.batches == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]


async def test_kafka_linger_ms_is_the_producers_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, Any]] = []

    class RecordingProducer:
        def __init__(self, **options: Any) -> None:
            made.append(options)

        async def start(self) -> None:
            return None

        async def stop(self) -> None:
            return None

    monkeypatch.setattr("app.kafka.publisher.AIOKafkaProducer", RecordingProducer)
    for linger in (0, 7):
        publisher = Publisher(Settings(kafka_linger_ms=linger))
        await publisher.start()
        await publisher.stop()
    assert [options["linger_ms"] for options in made] == [0, 7]
