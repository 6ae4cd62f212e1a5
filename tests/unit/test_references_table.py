"""The references table written a batch at a time: RocksDB per partition, changelog first."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

from app.models import KnownReference
from app.settings import Settings
from tables.references import References, encode_known


class FakePublisher:
    """Gives each partition's messages offsets from 100 on, as a broker would."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, list[tuple[bytes | None, bytes]], list[int]]] = []

    async def publish(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes]], partitions: Sequence[int]
    ) -> dict[int, int]:
        if self.fail:
            raise RuntimeError("Kafka refused the changelog")
        self.sent.append((topic, list(messages), list(partitions)))
        last: dict[int, int] = {}
        for partition in partitions:
            last[partition] = last.get(partition, 99) + 1
        return last


class Event:
    """What the table reads of an intake event: its message's partition (held weakly by Faust)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


def event(partition: int) -> Any:
    return Event(partition)


def known(n: int) -> KnownReference:
    return KnownReference(fingerprint=f"{n:064x}", payment_id=uuid.uuid4())


def references(tmp_path: Path, store: str, publisher: FakePublisher) -> References:
    app = faust.App(f"references-test-{uuid.uuid4().hex[:8]}", store=store, datadir=str(tmp_path))
    return References(app, Settings(), publisher)  # type: ignore[arg-type]


@pytest.mark.parametrize("store", ["rocksdb://", "memory://"])
async def test_a_batch_lands_in_each_events_partition_after_its_changelog(
    tmp_path: Path, store: str
) -> None:
    publisher = FakePublisher()
    table = references(tmp_path, store, publisher)
    entries = [(event(n % 3), f"REF-{n}", known(n)) for n in range(7)]

    await table.put_many(entries)

    [(topic, messages, partitions)] = publisher.sent
    assert topic == table.table.changelog_topic.get_topic_name()
    assert messages == [
        (f"REF-{n}".encode(), encode_known(known_)) for n, (_, _, known_) in enumerate(entries)
    ]
    assert partitions == [n % 3 for n in range(7)]
    for ev, reference, known_ in entries:
        assert table.get(ev, reference) == known_
    if store == "rocksdb://":  # one database per partition: each key in its event's only
        for ev, reference, _ in entries:
            assert table.get(event(ev.message.partition + 3), reference) is None
        data: Any = table.table.data
        # Partition 0 got REF-0, REF-3, REF-6 at offsets 100..102; 1 and 2 two each.
        assert data.persisted_offset(TP(topic, 0)) == 102
        assert data.persisted_offset(TP(topic, 1)) == 101
        assert data.persisted_offset(TP(topic, 2)) == 101


async def test_nothing_is_written_when_the_changelog_is_refused(tmp_path: Path) -> None:
    table = references(tmp_path, "rocksdb://", FakePublisher(fail=True))
    with pytest.raises(RuntimeError):
        await table.put_many([(event(0), "REF-1", known(1))])
    assert table.get(event(0), "REF-1") is None
