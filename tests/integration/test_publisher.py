"""The publisher's batched sends: the key's partition, order within a partition, last offsets."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.publisher import Publisher
from app.topics import EVENTS_DEFAULT, INTAKE
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
