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
        agent (bench/staging). So the values go into RocksDB directly, the changelog
        records go out as one batch through our idempotent producer (same topic,
        partition, key and value bytes as Faust would send), and the persisted
        offset is written once per partition after the broker has them.
        """
        if not entries:
            return
        store: Any = self.table.data  # the RocksDB (or memory) Store, not just a mapping
        messages: list[tuple[bytes | None, bytes]] = []
        partitions: list[int] = []
        for event, reference, known in entries:
            key, value = reference.encode(), encode_known(known)
            with event_context(event):
                store[key] = value
            messages.append((key, value))
            partitions.append(event.message.partition)
        topic = self.table.changelog_topic.get_topic_name()
        last = await self.publisher.publish(topic, messages, partitions)
        for partition, offset in last.items():
            store.set_persisted_offset(TP(topic, partition), offset)
