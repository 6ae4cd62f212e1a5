"""The ``references`` table: reference → (fingerprint, payment_id), the agent's fast path.

RocksDB-backed and changelogged like any Faust table. It is written only after
Postgres has committed the reference, so a hit always means the row exists; a
miss means "ask Postgres", never "new".

Keys are the reference's UTF-8 bytes, exactly the intake topic's key bytes, so
the changelog partition of a key is the intake partition that key arrives on
(docs/architecture.md: str keys would be JSON-encoded and hash elsewhere).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TP, EventT

from app.kafka.faust_patches import event_context
from app.kafka.publisher import Publisher
from app.kafka.topics import INTAKE_PARTITIONS
from app.models import KnownReference
from app.settings import Settings
from tables.rocksdb import table_options

#: v2: entries expire (RocksDB TTL, changelog retention). A TTL store stores a timestamp
#: after each value, so it must not open the v1 folders; v1's changelog topic
#: (``<KAFKA_CLIENT_ID>-references-changelog``) can be deleted after the upgrade.
TABLE_NAME = "references-v2"

_FINGERPRINT_BYTES = 32


def encode_known(known: KnownReference) -> bytes:
    """48 bytes: the raw SHA-256 fingerprint, then the payment_id."""
    return bytes.fromhex(known.fingerprint) + known.payment_id.bytes


def decode_known(value: bytes) -> KnownReference:
    """Inverse of :func:`encode_known`."""
    return KnownReference(
        fingerprint=value[:_FINGERPRINT_BYTES].hex(),
        payment_id=uuid.UUID(bytes=value[_FINGERPRINT_BYTES:]),
    )


class References:
    """Typed access to the table: ``str`` references in, :class:`KnownReference` out."""

    def __init__(
        self, app: faust.App, settings: Settings, publisher: Publisher, **table_kwargs: Any
    ) -> None:
        self.publisher = publisher
        # Entries live as long as Postgres keeps their reference (app/recording/retention.py):
        # RocksDB drops them at compaction after the TTL, and the changelog deletes
        # segments past it, so a rebuilt table does not bring them back. An entry
        # past its TTL that is still read is still right: the payment was recorded.
        ttl_seconds = settings.reference_cache_ttl_days * 86400
        self.table = app.Table(
            TABLE_NAME,
            # bytes types make Faust use the raw codec for the changelog too.
            key_type=bytes,
            value_type=bytes,
            partitions=INTAKE_PARTITIONS,
            options={**table_options(settings), "ttl": ttl_seconds},
            extra_topic_configs={
                "cleanup.policy": "compact,delete",
                "retention.ms": str(ttl_seconds * 1000),
            },
            help="reference_number -> fingerprint + payment_id, written after the Postgres commit",
            **table_kwargs,
        )

    def get(self, event: EventT[Any], reference: str) -> KnownReference | None:
        """What the table knows about ``reference`` (None: ask Postgres).

        Read from the store under ``event``: RocksDB then looks in that event's
        partition only, instead of probing every partition's database.
        """
        store: Any = self.table.data
        with event_context(event):
            value = store.get(reference.encode())
        return None if value is None else decode_known(value)

    async def put_many(self, entries: Sequence[tuple[EventT[Any], str, KnownReference]]) -> None:
        """Remember committed references; each comes with the intake event that carried it.

        Faust's ``table[key] = value`` sends one changelog record per key through
        its producer buffer and rewrites the partition's persisted offset per key:
        at a batch of thousands of keys that was the largest cost of the record
        agent (bench/staging). So the changelog records go out first, as one batch
        through our idempotent producer (same topic, partition, key and value bytes
        as Faust would send); then the store applies them as Faust applies a
        changelog it recovers from: one RocksDB write batch per partition (a third
        of a put per key), and the persisted offset once per partition.
        """
        if not entries:
            return
        messages: list[tuple[bytes, bytes]] = []
        partitions: list[int] = []
        for event, reference, known in entries:
            messages.append((reference.encode(), encode_known(known)))
            partitions.append(event.message.partition)
        topic = self.table.changelog_topic.get_topic_name()
        last = await self.publisher.publish(topic, messages, partitions)
        store: Any = self.table.data  # the RocksDB (or memory) Store, not just a mapping
        written = {partition: (TP(topic, partition), offset) for partition, offset in last.items()}
        store.apply_changelog_batch(
            [
                _Written(key, value, _ChangelogRecord(*written[partition], partition, key, value))
                for (key, value), partition in zip(messages, partitions, strict=True)
            ],
            to_key=_same,
            to_value=_same,
        )


def _same(value: bytes) -> bytes:
    return value


@dataclass(frozen=True, slots=True)
class _ChangelogRecord:
    """What a store's ``apply_changelog_batch`` reads of a changelog message."""

    tp: TP
    offset: int  # the partition's last offset in the batch: the store keeps the highest
    partition: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class _Written:
    """A changelog event as ``apply_changelog_batch`` reads it (the memory store: key, value)."""

    key: bytes
    value: bytes
    message: _ChangelogRecord
