"""Where one reference is: Postgres, Redis, the references changelog and payment.events.

Each place is asked on its own; one that cannot be reached is reported as such
and the others are still asked. Topic scans read one partition (the one the key
hashes to) up to its end offset seen at the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError

from app.exceptions import DependencyUnavailable
from app.kafka.codecs import decode_event
from app.kafka.topic_reader import TopicReader, partition_for_key
from app.models import payment_id_for
from app.recording import decisions, payment_store
from app.settings import Settings
from app.storage.database import connect
from app.storage.redis_connection import RedisConnection
from tables.references import decode_known

Say = Callable[[str], None]

#: Decision keys looked at, at most, when searching Redis for the reference's webhooks.
DECISION_SCAN_LIMIT = 200_000


@dataclass(frozen=True)
class Entry:
    """What one place says: ``found`` (with what), ``absent`` or ``FAILED`` (with why)."""

    status: str
    place: str
    text: str = ""


@dataclass
class Lookup:
    """What each place says about one reference, in the order they were asked."""

    reference: str
    entries: list[Entry] = field(default_factory=list)

    def found(self, place: str, text: str) -> None:
        self.entries.append(Entry("found", place, text))

    def absent(self, place: str) -> None:
        self.entries.append(Entry("absent", place))

    def failed(self, problem: str) -> None:
        self.entries.append(Entry("FAILED", problem))

    @property
    def failures(self) -> list[str]:
        return [entry.place for entry in self.entries if entry.status == "FAILED"]

    def lines(self) -> list[str]:
        lines = [f"reference {self.reference} (payment_id {payment_id_for(self.reference)})"]
        for entry in self.entries:
            text = f"{entry.place}: {entry.text}" if entry.text else entry.place
            lines.append(f"  {entry.status:<7}  {text}")
        return lines


def _when(value: datetime) -> str:
    return value.isoformat(sep=" ", timespec="seconds")


async def _postgres(settings: Settings, lookup: Lookup) -> list[str]:
    """The reference row and payments rows; returns the loan accounts of the rows."""
    connection = await connect(settings)
    try:
        reference = await payment_store.reference_row(connection, lookup.reference)
        payments = await payment_store.payment_rows(connection, lookup.reference)
    finally:
        await connection.close()
    if reference is None:
        lookup.absent("postgres payment_references")
    else:
        lookup.found(
            "postgres payment_references",
            f"payment_id {reference['payment_id']}, "
            f"payment_date {_when(reference['payment_date'])}, "
            f"fingerprint {reference['fingerprint'][:12]}…, "
            f"created {_when(reference['created_at'])}",
        )
    if not payments:
        lookup.absent("postgres payments")
    for row in payments:
        lookup.found(
            "postgres payments",
            f"id {row['id']}, account {row['loan_account_number']}, cif {row['cif']}, "
            f"amount {row['amount']}, payment_date {_when(row['payment_date'])}, "
            f"channel {row['payment_channel'] or '-'}, source {row['source']}, "
            f"created {_when(row['created_at'])}",
        )
    return list(dict.fromkeys(row["loan_account_number"] for row in payments))


async def _redis(settings: Settings, lookup: Lookup, note: Say) -> None:
    """The hot cache (this period's and the last one's hash) and webhook decisions naming it."""
    payment_id = str(payment_id_for(lookup.reference))
    redis = RedisConnection(settings)
    await redis.start()
    try:
        cached = await decisions.hot_cache_entries(
            redis, lookup.reference, datetime.now(UTC), settings.redis_ttl_seconds
        )
        for key, fingerprint, cached_at in cached:
            lookup.found(
                f"redis {key}",
                f"fingerprint {fingerprint[:12]}…, cached at {cached_at or '?'} (Unix time)",
            )
        if not cached:
            lookup.absent("redis hot cache (payments:references:{this period,the last})")
        # Decisions are keyed by webhook id, which no row keeps: look for the payment_id
        # in their answers, over a bounded scan.
        scan = decisions.DecisionScan(limit=DECISION_SCAN_LIMIT)
        found = 0
        async for endpoint, webhook_id, answer in scan.naming(redis, payment_id, note):
            found += 1
            lookup.found(
                "redis decision",
                f"webhook-id {webhook_id}: HTTP "
                f"{answer.get('status')} {answer.get('body', {}).get('status')} "
                f"(endpoint {endpoint})",
            )
        if not found:
            limited = ", stopped at the limit" if scan.scanned >= DECISION_SCAN_LIMIT else ""
            lookup.absent(f"redis decisions (scanned {scan.scanned} keys{limited})")
    finally:
        await redis.stop()


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode(errors="replace")


def _progress(note: Say, what: str) -> Callable[[int, int], None]:
    return lambda read, total: note(f"... scanned {read} of about {total} records of {what}")


async def _changelog(settings: Settings, topic: str, lookup: Lookup, note: Say) -> None:
    """The last value of the reference's key on the references table's changelog."""
    key = lookup.reference.encode()
    async with TopicReader(settings, "lookup") as reader:
        try:
            partitions = await reader.partitions(topic, wait_seconds=3)
        except LookupError:
            lookup.absent(f"changelog {topic} (the topic does not exist)")
            return
        tp = partitions[partition_for_key(key, len(partitions))]
        bounds = await reader.bounds([tp])
        note(f"scanning {topic} partition {tp.partition} ({bounds[tp][1]} offsets)")
        last: Any = None
        async for message in reader.read(bounds, _progress(note, topic)):
            if message.key == key:
                last = message
    if last is None:
        lookup.absent(f"changelog {topic} partition {tp.partition}")
    elif last.value is None:
        lookup.found(f"changelog {topic}", f"deleted (tombstone at {tp.partition}/{last.offset})")
    else:
        known = decode_known(last.value)
        lookup.found(
            f"changelog {topic}",
            f"last value at {tp.partition}/{last.offset}: payment_id {known.payment_id}, "
            f"fingerprint {known.fingerprint[:12]}…",
        )


async def _events(settings: Settings, accounts: list[str], lookup: Lookup, note: Say) -> None:
    """payment.recorded events of the payment, in the partitions of its accounts."""
    topic = settings.kafka_topic
    if not accounts:
        lookup.absent(f"{topic} (not scanned: no payments row names the loan account)")
        return
    payment_id = str(payment_id_for(lookup.reference))
    needle = payment_id.encode()
    found = 0
    async with TopicReader(settings, "lookup") as reader:
        partitions = await reader.partitions(topic)
        chosen = list(
            dict.fromkeys(
                partitions[partition_for_key(account.encode(), len(partitions))]
                for account in accounts
            )
        )
        bounds = await reader.bounds(chosen)
        for tp in chosen:
            note(f"scanning {topic} partition {tp.partition} ({bounds[tp][1]} offsets)")
        async for message in reader.read(bounds, _progress(note, topic)):
            if message.value is None or needle not in message.value:
                continue
            try:
                event = decode_event(message.value)
            except ValidationError:
                continue  # not an event of ours; reconcile reports those
            if str(event.payment.id) != payment_id:
                continue
            found += 1
            lookup.found(
                f"{topic}",
                f"{message.partition}/{message.offset}: event_id {event.event_id}, "
                f"{event.event_type} at {event.timestamp.isoformat(timespec='seconds')}",
            )
    if not found:
        where = ", ".join(str(tp.partition) for tp in chosen)
        lookup.absent(f"{topic} (partition {where})")


async def lookup_reference(
    settings: Settings, reference: str, *, changelog_topic: str, note: Say
) -> Lookup:
    """Ask every place about ``reference``; a place that cannot be asked is an entry too."""
    lookup = Lookup(reference)
    accounts: list[str] = []
    try:
        accounts = await _postgres(settings, lookup)
    except DependencyUnavailable as exc:
        lookup.failed(f"postgres: {exc}")
    try:
        await _redis(settings, lookup, note)
    except (RedisError, OSError) as exc:
        lookup.failed(
            f"redis: cannot reach Redis at {settings.redis_host}:{settings.redis_port} "
            f"({type(exc).__name__}: {exc}): is it up? (`make up`, then `scripts/stack status`)"
        )
    try:
        await _changelog(settings, changelog_topic, lookup, note)
        await _events(settings, accounts, lookup, note)
    except DependencyUnavailable as exc:
        lookup.failed(f"kafka: {exc}")
    return lookup
