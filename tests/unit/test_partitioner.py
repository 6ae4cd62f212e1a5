"""The publisher's partitioner: Kafka's murmur2 bit for bit, and each repeated key hashed once."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafkas_murmur2

from app.kafka import partitioner
from app.kafka.partitioner import Partitioner, murmur2


def test_murmur2_is_aiokafkas_on_many_keys() -> None:
    rng = random.Random(18)  # noqa: S311 (test data, not secrets)
    keys = [rng.randbytes(rng.randrange(0, 64)) for _ in range(20_000)]
    keys += [b"", b"a", b"ab", b"abc", b"abcd", b"REF-1", "réf-ü".encode(), b"\xff" * 7]
    for key in keys:
        assert murmur2(key) == aiokafkas_murmur2(key), key


def test_partitions_are_the_java_clients() -> None:
    choose = Partitioner()
    rng = random.Random(7)  # noqa: S311 (test data, not secrets)
    for count in (1, 3, 12, 31):
        partitions = list(range(count))
        for _ in range(2_000):
            key = f"LA{rng.randrange(10**6):06d}".encode()
            assert choose(key, partitions) == DefaultPartitioner()(key, partitions, partitions)


def test_a_repeated_key_is_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[bytes] = []

    def counting(key: bytes) -> int:
        hashed.append(key)
        return aiokafkas_murmur2(key)

    monkeypatch.setattr(partitioner, "murmur2", counting)
    choose = Partitioner()
    twelve, three = list(range(12)), list(range(3))
    first = [choose(b"LA000001", twelve) for _ in range(5)]
    assert first == [DefaultPartitioner()(b"LA000001", twelve, twelve)] * 5
    assert hashed == [b"LA000001"]
    # Another partition count is another answer, not the remembered one.
    assert choose(b"LA000001", three) == DefaultPartitioner()(b"LA000001", three, three)
    assert hashed == [b"LA000001", b"LA000001"]


def test_the_memory_of_keys_is_bounded() -> None:
    choose = Partitioner(remembered=100)
    partitions = list(range(12))
    for number in range(1_000):
        key = f"REF-{number}".encode()
        assert choose(key, partitions) == DefaultPartitioner()(key, partitions, partitions)
        assert len(choose._known) <= 100


def test_a_message_without_a_key_goes_to_some_partition() -> None:
    assert Partitioner()(None, [4, 5, 6]) in {4, 5, 6}
