"""Which partition a key goes to: the Java client's murmur2, as Faust and Kafka's tools compute it.

aiokafka's ``DefaultPartitioner`` hashes every key in pure Python, masking after
each operation; the publisher asked it once per message, twice per staged row
(the intake record and its event), about 4% of the worker's time (bench/staging).
This one hashes a word per loop with fewer operations, and remembers the
partitions of recent keys: event keys are loan accounts, which repeat. A unit test
holds it to aiokafka's on many keys.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

#: murmur2's seed and mixing constant, as the Java client has them.
SEED = 0x9747B28C
MULTIPLIER = 0x5BD1E995
MASK = 0xFFFFFFFF

#: Keys whose partition is remembered; past it the memory starts afresh.
REMEMBERED_KEYS = 10_000


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2(data)`` as an unsigned 32-bit int (aiokafka's ``murmur2``)."""
    length = len(data)
    h = SEED ^ length
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * MULTIPLIER) & MASK
        k ^= k >> 24
        h = ((h * MULTIPLIER) & MASK) ^ ((k * MULTIPLIER) & MASK)
    tail = data[words * 4 :]
    if tail:
        if len(tail) == 3:
            h ^= tail[2] << 16
        if len(tail) >= 2:
            h ^= tail[1] << 8
        h = ((h ^ tail[0]) * MULTIPLIER) & MASK
    h ^= h >> 13
    h = (h * MULTIPLIER) & MASK
    return h ^ (h >> 15)


class Partitioner:
    """``partitioner(key, partitions)``: the partition of ``key`` among ``partitions`` (sorted).

    A message without a key (a dead letter without a reference) goes to any partition,
    as with aiokafka's partitioner.
    """

    def __init__(self, remembered: int = REMEMBERED_KEYS) -> None:
        self.remembered = remembered
        self._known: dict[tuple[bytes, int], int] = {}

    def __call__(self, key: bytes | None, partitions: Sequence[int]) -> int:
        if key is None:
            return random.choice(partitions)  # noqa: S311 (spreading load, not a secret)
        count = len(partitions)
        found = self._known.get((key, count))
        if found is None:
            if len(self._known) >= self.remembered:
                self._known.clear()
            found = self._known[key, count] = (murmur2(key) & 0x7FFFFFFF) % count
        return partitions[found]
