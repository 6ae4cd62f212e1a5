"""An idempotent, acks=all aiokafka producer round-trips a record through payment.intake."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.stack import Stack


async def test_idempotent_producer_round_trips_through_intake(stack: Stack) -> None:
    key = f"REF-{uuid.uuid4()}".encode()
    value = b'{"reference_number": "round-trip"}'
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        metadata = await producer.send_and_wait(
            "payment.intake", value, key=key, headers=[("source", b"test")]
        )
    finally:
        await producer.stop()
    assert metadata.topic == "payment.intake"
    assert 0 <= metadata.partition < 12

    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition("payment.intake", metadata.partition)
        consumer.assign([partition])
        consumer.seek(partition, metadata.offset)
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (key, value, metadata.offset)
    assert list(record.headers) == [("source", b"test")]


async def test_the_same_key_always_lands_on_the_same_partition(stack: Stack) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        key = f"REF-{uuid.uuid4()}".encode()
        partitions = {
            (await producer.send_and_wait("payment.intake", b"{}", key=key)).partition
            for _ in range(5)
        }
    finally:
        await producer.stop()
    assert len(partitions) == 1
