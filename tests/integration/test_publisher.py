"""The publisher's batched sends: the key's partition, order within a partition, last offsets."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.kafka.publisher import Publisher
from app.kafka.topics import EVENTS_DEFAULT, INTAKE
from tests.stack import Stack, read_topics_conf


async def _read(stack: Stack, topic: str) -> dict[int, list[tuple[int, bytes, bytes]]]:
    """Every record of ``topic`` by partition: (offset, key, value)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        count, _ = read_topics_conf()[topic]
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: dict[int, list[tuple[int, bytes, bytes]]] = {}
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
                records.setdefault(tp.partition, []).extend(
                    (record.offset, record.key, record.value) for record in batch
                )
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return records
    finally:
        await consumer.stop()


async def test_batches_land_where_single_sends_would_in_order(stack: Stack, run: str) -> None:
    # 2 KiB values: each partition needs more than one 512 KiB record batch.
    messages = [(f"REF-{run}-{n}".encode(), b"%06d" % n + b"x" * 2048) for n in range(4000)]
    publisher = Publisher(stack.settings())
    await publisher.start()
    try:
        last = await publisher.publish(INTAKE, messages)
    finally:
        await publisher.stop()

    probe = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await probe.start()
    try:  # where aiokafka's own send puts a key (same partition count as the intake)
        expected_partition = {
            key: (await probe.send_and_wait(EVENTS_DEFAULT, b"", key=key)).partition
            for key, _ in messages[:50]
        }
    finally:
        await probe.stop()

    records = await _read(stack, INTAKE)
    assert sum(len(found) for found in records.values()) == len(messages)
    partition_of = {key: p for p, found in records.items() for _, key, _ in found}
    assert all(partition_of[key] == p for key, p in expected_partition.items())
    for found in records.values():
        sent_order = [value for _, _, value in found]
        assert sent_order == sorted(sent_order)  # values carry their send order
    assert last == {p: found[-1][0] for p, found in records.items()}


async def test_a_published_topic_stays_in_the_metadata_when_another_is_published(
    stack: Stack, run: str
) -> None:
    # aiokafka refreshes every topic while its client tracks none, and its send tracks
    # only topics it does not know. A topic known from such a refresh left the metadata
    # once another topic was tracked: the record agent's first events, sent next to its
    # first records to a table changelog Faust had just created, waited 30 s for a leader.
    publisher = Publisher(stack.settings())
    await publisher.start()
    try:
        producer: Any = publisher._producer
        client = producer.client
        for _ in range(100):  # (the run's topics were just created)
            await client.force_metadata_update()
            if EVENTS_DEFAULT in client.cluster.topics():
                break
            await asyncio.sleep(0.1)
        assert not client._topics, "the refresh must cover every topic"
        created = f"publisher-{run}"
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(created, 1, 1)])
        finally:
            await admin.close()
        await publisher.publish(EVENTS_DEFAULT, [(b"k", b"event")])
        await publisher.publish(created, [(b"k", b"change")], [0])
        assert EVENTS_DEFAULT in client.cluster.topics()
    finally:
        await publisher.stop()
