"""Checking docs/architecture.md's invariants over what Postgres and ``payment.events`` hold now.

Reads every event up to the end offsets seen at the start, and every payments
row, and compares them by payment_id field by field. Memory grows with one small
entry per event (a hash of its content), not with the events themselves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from app import tls
from app.kafka.topic_reader import kafka_unreachable, partitions_of
from app.models import utc_text
from app.recording import payment_store
from app.settings import Settings
from app.storage import database


@dataclass
class ReconcileReport:
    """The figures, and whether the invariants hold (``ok``)."""

    references: int = 0
    payment_rows: int = 0
    distinct_row_references: int = 0
    distinct_event_ids: int = 0
    events_read: int = 0
    rows_without_events: int = 0
    events_without_rows: int = 0
    mismatched_fields: int = 0
    event_ids_with_two_contents: int = 0
    unsent_outbox: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.references == self.payment_rows == self.distinct_row_references
            and self.distinct_event_ids == self.payment_rows
            and self.rows_without_events == 0
            and self.events_without_rows == 0
            and self.mismatched_fields == 0
            and self.event_ids_with_two_contents == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for a JSON value; equal values (1.50 and 1.5) freeze equal."""
    if isinstance(value, dict):
        return frozenset((key, _freeze(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value  # type: ignore[no-any-return]


def _loads(text: str | bytes) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def content_hash(
    payment_id: str,
    reference: str,
    account: str,
    cif: str,
    amount: Decimal,
    payment_date: str,
    channel: str | None,
    source: str,
    metadata: Any,
    currency: str | None,
) -> int:
    """One number for the fields an event and its row must agree on."""
    return hash(
        (
            payment_id,
            reference,
            account,
            cif,
            Decimal(amount).quantize(Decimal("0.01")),
            payment_date,
            channel,
            source,
            _freeze(metadata),
            currency,
        )
    )


async def read_events(
    settings: Settings, topic: str, progress: Callable[[int], None] | None = None
) -> tuple[dict[str, tuple[str, int]], int, int]:
    """event_id → (payment_id, content hash) for every event up to today's end offsets.

    Also returns how many events were read and how many event_ids came with two contents.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=",".join(settings.kafka_brokers),
        client_id=f"{settings.kafka_client_id}-reconcile",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **tls.kafka_options(settings),
    )
    try:
        await consumer.start()
    except KafkaError as exc:
        await consumer.stop()
        raise kafka_unreachable(settings, exc) from exc
    events: dict[str, tuple[str, int]] = {}
    read = 0
    two_contents = 0
    try:
        assigned = await partitions_of(consumer, topic)
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        remaining = {tp for tp in assigned if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=20_000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        continue
                    read += 1
                    event = _loads(message.value)
                    payment = event["payment"]
                    entry = (
                        payment["id"],
                        content_hash(
                            payment["id"],
                            payment["reference_number"],
                            payment["loan_account_number"],
                            payment["cif"],
                            payment["amount"],
                            payment["payment_date"],
                            payment.get("payment_channel"),
                            payment["source"],
                            payment.get("metadata") or {},
                            # absent from events written before it was a field
                            payment.get("currency"),
                        ),
                    )
                    previous = events.setdefault(event["event_id"], entry)
                    if previous != entry:
                        two_contents += 1
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
            if progress is not None:
                progress(read)
    finally:
        await consumer.stop()
    return events, read, two_contents


async def reconcile(
    settings: Settings, progress: Callable[[str], None] | None = None
) -> ReconcileReport:
    """Compare Postgres with ``payment.events`` (KAFKA_TOPIC) and report."""
    started = time.monotonic()
    report = ReconcileReport()
    say = progress or (lambda _: None)
    say(f"reading {settings.kafka_topic} ...")
    events, report.events_read, report.event_ids_with_two_contents = await read_events(
        settings, settings.kafka_topic
    )
    report.distinct_event_ids = len(events)
    say(f"read {report.events_read} events ({len(events)} distinct); reading payments ...")
    by_payment = {payment_id: digest for payment_id, digest in events.values()}
    del events
    connection = await database.connect(settings)
    try:
        counts = await payment_store.counts(connection)
        report.references = counts["references"]
        report.payment_rows = counts["rows"]
        report.distinct_row_references = counts["distinct_row_refs"]
        report.unsent_outbox = counts["unsent_outbox"]
        seen = 0
        async with connection.transaction(readonly=True):
            async for row in payment_store.every_payment(connection):
                seen += 1
                payment_id = str(row["id"])
                digest = by_payment.pop(payment_id, None)
                if digest is None:
                    report.rows_without_events += 1
                    continue
                metadata = _loads(row["metadata"]) if row["metadata"] is not None else {}
                expected = content_hash(
                    payment_id,
                    row["reference_number"],
                    row["loan_account_number"],
                    row["cif"],
                    row["amount"],
                    utc_text(row["payment_date"]),
                    row["payment_channel"],
                    row["source"],
                    metadata,
                    row["currency"],
                )
                if expected != digest:
                    report.mismatched_fields += 1
                if seen % 200_000 == 0:
                    say(f"compared {seen} rows ...")
    finally:
        await connection.close()
    report.events_without_rows = len(by_payment)
    report.seconds = round(time.monotonic() - started, 2)
    return report
