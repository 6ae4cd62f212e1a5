"""The reference lookup's report, and the partition a key hashes to."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from app.kafka.topic_reader import partition_for_key
from app.models import payment_id_for
from app.ops.lookup import Lookup


def test_partition_for_key_is_kafkas_default_partitioner() -> None:
    partitions = list(range(12))
    for key in (b"REF-1", b"LA000002", "réf-ü".encode(), b""):
        assert partition_for_key(key, 12) == DefaultPartitioner()(key, partitions, partitions)


def test_the_report_lists_each_place_in_the_order_asked() -> None:
    lookup = Lookup("REF-1")
    lookup.found("postgres payments", "id 1")
    lookup.absent("redis hot cache")
    lookup.failed("kafka: cannot reach Kafka")
    assert lookup.failures == ["kafka: cannot reach Kafka"]
    assert lookup.lines() == [
        f"reference REF-1 (payment_id {payment_id_for('REF-1')})",
        "  found    postgres payments: id 1",
        "  absent   redis hot cache",
        "  FAILED   kafka: cannot reach Kafka",
    ]
