"""Postgres, the authority: recording a batch of payments in one transaction.

Idempotency is the primary key of ``payment_references``: a batch first claims
its references with ``ON CONFLICT DO NOTHING RETURNING``, and only the claimed
ones get a ``payments`` row, in the same transaction as one outbox row holding
the batch's events. Never one INSERT per row: a small batch (up to
ONE_STATEMENT_MAX records) is one call of ``payment_service.record_batch``
(migrations/0010: the same statements, set-based, in one round trip); a larger
one, a batch holding a late duplicate, and the FAULT_POINT that freezes inside
the transaction take the long way, a transaction whose payments go in with COPY.

The worker that wrote an outbox row holds it (:meth:`PaymentStore.holding`)
while it publishes the events: the outbox relay takes only rows no live worker
holds (app/recording/outbox_relay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
from pydantic_core import to_json

from app.kafka.codecs import encode_event_for
from app.models import KnownReference, PaymentRecord, fingerprint_of, naive_utc, utc_text
from app.storage.database import POSTGRES_ERRORS, translated

log = logging.getLogger(__name__)

CLAIM_REFERENCES = """
INSERT INTO payment_service.payment_references
  (reference_number, payment_id, payment_date, fingerprint)
SELECT r, p, d, f
FROM unnest($1::varchar[], $2::uuid[], $3::timestamp[], $4::text[]) AS t(r, p, d, f)
ORDER BY r  -- one lock order for every batch, so two workers cannot deadlock
ON CONFLICT (reference_number) DO NOTHING
RETURNING reference_number
"""

KNOWN_REFERENCES = """
SELECT reference_number, payment_id, fingerprint
FROM payment_service.payment_references
WHERE reference_number = ANY($1::varchar[])
"""

#: A payment recorded before currency was a column (0008) holds it only in the metadata
#: its channel wrote (card, bank_transfer): a conflict names the currency only when it differs.
STORED_PAYMENTS = """
SELECT DISTINCT ON (reference_number)
  reference_number, loan_account_number, cif, amount, payment_date, payment_channel,
  coalesce(
    currency,
    CASE WHEN payment_channel IN ('card', 'bank_transfer') THEN metadata->>'currency' END
  ) AS currency
FROM payment_service.payments
WHERE reference_number = ANY($1::varchar[])
ORDER BY reference_number, created_at
"""

#: Set once reference retention (app/recording/retention.py) has removed references
#: created before it.
RETENTION_WATERMARK = "SELECT pruned_before FROM payment_service.reference_retention"

#: Payments recorded under references retention removed since: their partitions are the
#: only memory left of them. payment_date bounds the search to the old partitions.
RECORDED_BEFORE = """
SELECT DISTINCT ON (reference_number)
  reference_number, id, loan_account_number, cif, amount, payment_date, payment_channel, currency
FROM payment_service.payments
WHERE reference_number = ANY($1::varchar[]) AND payment_date < $2
ORDER BY reference_number, created_at
"""

#: A late duplicate's claim becomes its first payment's reference again.
RESTORE_REFERENCES = """
UPDATE payment_service.payment_references AS r
SET payment_id = t.p, payment_date = t.d, fingerprint = t.f
FROM unnest($1::varchar[], $2::uuid[], $3::timestamp[], $4::text[]) AS t(ref, p, d, f)
WHERE r.reference_number = t.ref
"""

ENSURE_PARTITION = "SELECT payment_service.ensure_payment_partition($1::date)"

#: The claim, the late check, the payments and the outbox row in one statement (migrations/0010).
RECORD_BATCH = """
SELECT reference_number, claimed, payment_id, fingerprint
FROM payment_service.record_batch(
  $1::varchar[], $2::uuid[], $3::timestamp[], $4::text[], $5::varchar[], $6::varchar[],
  $7::numeric[], $8::varchar[], $9::varchar[], $10::jsonb[], $11::varchar[], $12::uuid,
  $13::text, $14::uuid[], $15::bytea[], $16::bytea[], $17::interval)
"""

#: The largest batch recorded in one statement. Small batches (webhooks: a few records) are
#: bound by round trips, which the statement saves; for staging's batches of 1,000 its unnest
#: cost Postgres 10-40% more CPU than COPY for the same time (bench/README.md).
ONE_STATEMENT_MAX = 100

#: record_batch's SQLSTATE for a batch holding a late duplicate (it changed nothing).
LATE_DUPLICATES = "PSLAT"

#: Postgres' words (SQLSTATE 23514) for a row whose month has no partition.
NO_PARTITION = "no partition of relation"

#: Kafka has these batches' events: the outbox keeps only what is still unsent.
MARK_SENT = "DELETE FROM payment_service.outbox WHERE batch_id = ANY($1::uuid[])"

#: The fast path still publishes these batches: the relay keeps off them for another lease.
RENEW_LEASES = """
UPDATE payment_service.outbox
SET leased_until = now() + make_interval(secs => $2)
WHERE batch_id = ANY($1::uuid[])
"""

#: The lock that lets one outbox relay run at a time, across workers.
RELAY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('payment_service.outbox_relay'))"

# A row's lease runs out at its last renewal (leased_until), else one lease ($1 s)
# after its commit.

#: The oldest rows whose lease ran out, and whether an earlier row still held shares a key.
UNLEASED_OUTBOX = """
SELECT o.batch_id, o.topic, o.message_keys,
       EXISTS (
         SELECT 1 FROM payment_service.outbox AS e
         WHERE e.topic = o.topic AND e.created_at < o.created_at
           AND coalesce(e.leased_until, e.created_at + make_interval(secs => $1)) >= now()
           AND e.message_keys && o.message_keys
       ) AS behind_held
FROM payment_service.outbox AS o
WHERE coalesce(o.leased_until, o.created_at + make_interval(secs => $1)) < now()
ORDER BY o.created_at, o.batch_id
LIMIT $2
"""

#: The chosen rows, locked, if their lease is still out (a frozen worker may have woken).
TAKE_OUTBOX = """
SELECT batch_id, topic, message_keys, payloads
FROM payment_service.outbox
WHERE batch_id = ANY($2::uuid[])
  AND coalesce(leased_until, created_at + make_interval(secs => $1)) < now()
ORDER BY created_at, batch_id
FOR UPDATE
"""

#: Retention raises the watermark before it removes a reference. Never moves back:
#: a run with a longer TTL must not switch the late check off.
SET_WATERMARK = """
INSERT INTO payment_service.reference_retention (id, pruned_before) VALUES (TRUE, $1)
ON CONFLICT (id) DO UPDATE
SET pruned_before = greatest(reference_retention.pruned_before, EXCLUDED.pruned_before),
    updated_at = now()
"""

COUNT_EXPIRED = "SELECT count(*) FROM payment_service.payment_references WHERE created_at < $1"

DELETE_CHUNK = """
DELETE FROM payment_service.payment_references
WHERE reference_number IN (
  SELECT reference_number FROM payment_service.payment_references
  WHERE created_at < $1
  ORDER BY created_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED)
"""


#: Reconcile's figures.
COUNTS = """
SELECT
  (SELECT count(*) FROM payment_service.payment_references) AS "references",
  (SELECT count(*) FROM payment_service.payments) AS rows,
  (SELECT count(DISTINCT reference_number) FROM payment_service.payments) AS distinct_row_refs,
  (SELECT coalesce(sum(cardinality(event_ids)), 0) FROM payment_service.outbox) AS unsent_outbox
"""

#: Every payments row, for reconcile to compare with its event.
ALL_PAYMENTS = """
SELECT id, reference_number, loan_account_number, cif, amount, payment_date,
       payment_channel, source, metadata::text AS metadata, currency
FROM payment_service.payments
"""


#: What lookup shows of one reference.
REFERENCE_ROW = """
SELECT reference_number, payment_id, payment_date, fingerprint, created_at
FROM payment_service.payment_references WHERE reference_number = $1
"""

PAYMENT_ROWS = """
SELECT id, loan_account_number, cif, amount, payment_date, payment_channel, source, created_at
FROM payment_service.payments WHERE reference_number = $1
ORDER BY created_at
"""

#: ``/metrics``: the events committed but not yet acknowledged, and the oldest one's age.
OUTBOX_FIGURES = """
SELECT coalesce(sum(cardinality(event_ids)), 0) AS events,
       coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_seconds
FROM payment_service.outbox
"""

#: Cache warming's next batch, newest first, before the cursor ($2, $3), within the last $1 seconds.
#: ``created_at`` is a TIMESTAMP filled by the session's NOW(): LOCALTIMESTAMP is its clock.
RECENT_REFERENCES = """
SELECT reference_number, fingerprint, payment_id, created_at
  FROM payment_service.payment_references
 WHERE created_at >= LOCALTIMESTAMP - make_interval(secs => $1)
   AND created_at <= $2
   AND (created_at, reference_number) < ($2, $3)
 ORDER BY created_at DESC, reference_number DESC
 LIMIT $4
"""

PAYMENT_COLUMNS = (
    "id",
    "reference_number",
    "loan_account_number",
    "cif",
    "amount",
    "payment_date",
    "payment_channel",
    "source",
    "metadata",
    "currency",
)
#: One row per batch: a prepared INSERT is one round trip, a COPY two.
ADD_OUTBOX_BATCH = """
INSERT INTO payment_service.outbox (batch_id, topic, event_ids, message_keys, payloads)
VALUES ($1, $2, $3, $4, $5)
"""


class _LateDuplicates(Exception):
    """record_batch refused a batch holding a late duplicate: record it the long way."""


@dataclass(frozen=True)
class OutgoingEvent:
    """An event committed to the outbox, ready to publish with exactly these bytes."""

    event_id: uuid.UUID
    key: bytes
    payload: bytes

    @classmethod
    def of(cls, record: PaymentRecord, recorded_text: str) -> OutgoingEvent:
        """``record``'s payment.recorded event, keyed by its loan account."""
        return cls(
            record.event_id,
            record.loan_account_number.encode(),
            encode_event_for(record, recorded_text),
        )


@dataclass
class RecordResult:
    """What one transaction did: the records it created and the references it found taken."""

    created: list[PaymentRecord] = field(default_factory=list)
    events: list[OutgoingEvent] = field(default_factory=list)
    existing: dict[str, KnownReference] = field(default_factory=dict)
    #: The outbox rows holding ``events`` (one per transaction), to delete once they are sent.
    outbox_batches: list[uuid.UUID] = field(default_factory=list)


def month_of(value: datetime) -> date:
    """The first day of the month ``value`` falls in (UTC): the partition it belongs to."""
    utc = value.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def defining_fields_of(row: Mapping[str, Any]) -> dict[str, str]:
    """A ``payments`` row's fingerprinted fields, spelled as PaymentRecord.defining_fields."""
    return {
        "reference_number": row["reference_number"],
        "loan_account_number": row["loan_account_number"],
        "cif": row["cif"],
        "amount": f"{row['amount']:.2f}",
        "payment_date": row["payment_date"].isoformat(),
        "payment_channel": row["payment_channel"] or "",
        "currency": row["currency"] or "",
    }


async def recorded_fingerprints(
    connection: asyncpg.Connection, references: Iterable[str]
) -> dict[str, str]:
    """The fingerprint each of ``references`` is recorded with, for those Postgres holds.

    On the caller's connection: the staging poller asks inside its claim's transaction.
    """
    wanted = list(set(references))
    if not wanted:
        return {}
    rows = await connection.fetch(KNOWN_REFERENCES, wanted)
    return {row["reference_number"]: row["fingerprint"] for row in rows}


async def take_relay_lock(connection: asyncpg.Connection) -> bool:
    """True when this transaction is the one outbox relay; released when it ends."""
    return bool(await connection.fetchval(RELAY_LOCK))


async def unleased_outbox(
    connection: asyncpg.Connection, lease_seconds: float, limit: int
) -> list[asyncpg.Record]:
    """The oldest ``limit`` outbox rows no worker holds, each saying if it is ``behind_held``."""
    return list(await connection.fetch(UNLEASED_OUTBOX, lease_seconds, limit))


async def take_outbox(
    connection: asyncpg.Connection, lease_seconds: float, batch_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """``batch_ids``' rows, locked, those still unleased: their topic, keys and payloads."""
    return list(await connection.fetch(TAKE_OUTBOX, lease_seconds, list(batch_ids)))


async def delete_outbox(connection: asyncpg.Connection, batch_ids: Sequence[uuid.UUID]) -> None:
    """Kafka has these batches' events."""
    await connection.execute(MARK_SENT, list(batch_ids))


async def count_references_before(connection: asyncpg.Connection, cutoff: datetime) -> int:
    """References created before ``cutoff`` (naive UTC)."""
    return int(await connection.fetchval(COUNT_EXPIRED, cutoff))


async def raise_retention_watermark(connection: asyncpg.Connection, cutoff: datetime) -> None:
    """Say references created before ``cutoff`` may be gone (the late-duplicate check reads it)."""
    await connection.execute(SET_WATERMARK, cutoff)


async def delete_references_before(
    connection: asyncpg.Connection, cutoff: datetime, limit: int
) -> int:
    """Remove up to ``limit`` of the oldest references created before ``cutoff``; how many."""
    status = await connection.execute(DELETE_CHUNK, cutoff, limit)
    return int(status.split()[-1])


async def reference_row(connection: asyncpg.Connection, reference: str) -> asyncpg.Record | None:
    """``reference``'s row of ``payment_references``, if Postgres holds it."""
    return await connection.fetchrow(REFERENCE_ROW, reference)


async def payment_rows(connection: asyncpg.Connection, reference: str) -> list[asyncpg.Record]:
    """Every ``payments`` row recorded under ``reference``, oldest first."""
    return list(await connection.fetch(PAYMENT_ROWS, reference))


async def counts(connection: asyncpg.Connection) -> asyncpg.Record:
    """``references``, ``rows``, ``distinct_row_refs`` and ``unsent_outbox``."""
    return await connection.fetchrow(COUNTS)


async def every_payment(connection: asyncpg.Connection) -> AsyncIterator[asyncpg.Record]:
    """Every ``payments`` row, streamed by a cursor: call it inside a transaction."""
    async for row in connection.cursor(ALL_PAYMENTS, prefetch=10_000):
        yield row


async def outbox_figures(connection: asyncpg.Connection) -> asyncpg.Record:
    """``events`` unsent in the outbox and ``oldest_seconds``, the oldest row's age (0: none)."""
    return await connection.fetchrow(OUTBOX_FIGURES)


async def recent_references(
    connection: asyncpg.Connection | asyncpg.Pool,
    seconds: float,
    before: tuple[datetime, str],
    limit: int,
) -> list[asyncpg.Record]:
    """Up to ``limit`` references created in the last ``seconds``, newest first, before
    the keyset cursor ``before`` (created_at naive UTC, reference_number)."""
    return list(await connection.fetch(RECENT_REFERENCES, seconds, before[0], before[1], limit))


class PaymentStore:
    """Reads and writes the service's tables through one pool.

    ``max_future`` is PAYMENT_DATE_MAX_FUTURE_DAYS: how far a recorded payment_date
    may lie past its recording, which bounds where late duplicates can be.
    ``after_claim`` (tests only, FAULT_POINT) is awaited with the transaction's
    connection once a batch has claimed references, before anything else is written.
    ``outbox_lease_seconds`` is OUTBOX_RELAY_MIN_AGE_SECONDS: how long an outbox
    row stays its worker's after the commit or the last renewal.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        events_topic: str,
        max_future: timedelta = timedelta(days=1),
        after_claim: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        outbox_lease_seconds: float = 15.0,
    ) -> None:
        self.pool = pool
        self.events_topic = events_topic
        self.max_future = max_future
        self._after_claim = after_claim
        self.outbox_lease_seconds = outbox_lease_seconds
        self._months: set[date] = set()

    async def known(self, references: Iterable[str]) -> dict[str, KnownReference]:
        """The references Postgres already holds, with their fingerprints and payment_ids."""
        wanted = list(references)
        if not wanted:
            return {}
        rows = await self.pool.fetch(KNOWN_REFERENCES, wanted)
        return {
            row["reference_number"]: KnownReference(row["fingerprint"], row["payment_id"])
            for row in rows
        }

    async def stored_fields(self, references: Iterable[str]) -> dict[str, dict[str, str]]:
        """The recorded defining fields of ``references`` (to name what a conflict changes)."""
        wanted = list(references)
        if not wanted:
            return {}
        rows = await self.pool.fetch(STORED_PAYMENTS, wanted)
        return {row["reference_number"]: defining_fields_of(row) for row in rows}

    async def ensure_partitions(self, records: Iterable[PaymentRecord]) -> None:
        """Create the monthly partitions these records need (each month asked once per process,
        and again once :meth:`record` finds it dropped).

        In its own short transaction: DDL on the parent must not sit inside the batch's.
        """
        missing = {month_of(record.payment_date) for record in records} - self._months
        if not missing:
            return
        async with self.pool.acquire() as connection:
            for month in sorted(missing):
                await connection.execute(ENSURE_PARTITION, month)
        self._months |= missing

    async def record(self, records: Sequence[PaymentRecord]) -> RecordResult:
        """Record ``records`` (distinct references) in one transaction; see the module doc.

        Raises DependencyUnavailable while Postgres is away, RecordsRefused when it
        refuses what the batch holds (never an asyncpg error).
        """
        if not records:
            return RecordResult()
        try:
            await self.ensure_partitions(records)
            try:
                return await self._record(records)
            except asyncpg.CheckViolationError as exc:
                # A month this process created (and remembers) was dropped since, by
                # maintenance or by hand: forget it and create it again, or its records
                # would be refused here while other workers record them.
                gone = {month_of(record.payment_date) for record in records} & self._months
                if NO_PARTITION not in str(exc) or not gone:
                    raise
                log.warning(
                    "the partitions of %s were dropped after this worker created them; "
                    "creating them again",
                    ", ".join(f"{month:%Y-%m}" for month in sorted(gone)),
                )
                self._months -= gone
                await self.ensure_partitions(records)
                return await self._record(records)
        except POSTGRES_ERRORS as exc:
            raise translated(exc) from exc

    async def _record(self, records: Sequence[PaymentRecord]) -> RecordResult:
        # FAULT_POINT freezes between the long way's statements: it takes the long way.
        if len(records) <= ONE_STATEMENT_MAX and self._after_claim is None:
            with contextlib.suppress(_LateDuplicates):
                return await self._record_in_one_statement(records)
        return await self._record_the_long_way(records)

    async def _record_in_one_statement(self, records: Sequence[PaymentRecord]) -> RecordResult:
        """The batch in one round trip (migrations/0010): the statements of the long way, in
        one function. Raises _LateDuplicates, having changed nothing, for a batch that holds
        one: the long way records it.
        """
        recorded_text = utc_text(datetime.now(UTC))
        events = [OutgoingEvent.of(record, recorded_text) for record in records]
        batch_id = uuid.uuid4()
        try:
            rows = await self.pool.fetch(
                RECORD_BATCH,
                [record.reference_number for record in records],
                [record.payment_id for record in records],
                [naive_utc(record.payment_date) for record in records],
                [record.fingerprint for record in records],
                [record.loan_account_number for record in records],
                [record.cif for record in records],
                [record.amount for record in records],
                [record.payment_channel for record in records],
                [record.source for record in records],
                [to_json(record.metadata).decode() for record in records],
                [record.currency for record in records],
                batch_id,
                self.events_topic,
                [event.event_id for event in events],
                [event.key for event in events],
                [event.payload for event in events],
                self.max_future + timedelta(days=1),
            )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == LATE_DUPLICATES:
                raise _LateDuplicates from exc
            raise
        result = RecordResult()
        claimed = set()
        for row in rows:
            if row["claimed"]:
                claimed.add(row["reference_number"])
            else:
                result.existing[row["reference_number"]] = KnownReference(
                    row["fingerprint"], row["payment_id"]
                )
        for record, event in zip(records, events, strict=True):
            if record.reference_number in claimed:
                result.created.append(record)
                result.events.append(event)
        if result.created:
            result.outbox_batches.append(batch_id)
        return result

    async def _record_the_long_way(self, records: Sequence[PaymentRecord]) -> RecordResult:
        result = RecordResult()
        by_reference = {record.reference_number: record for record in records}
        recorded_text = utc_text(datetime.now(UTC))
        async with self.pool.acquire() as connection, connection.transaction():
            claimed = await connection.fetch(
                CLAIM_REFERENCES,
                list(by_reference),
                [record.payment_id for record in records],
                [naive_utc(record.payment_date) for record in records],
                [record.fingerprint for record in records],
            )
            claimed_refs = {row["reference_number"] for row in claimed}
            if claimed_refs and self._after_claim is not None:
                await self._after_claim(connection)
            taken = [ref for ref in by_reference if ref not in claimed_refs]
            if taken:
                rows = await connection.fetch(KNOWN_REFERENCES, taken)
                result.existing = {
                    row["reference_number"]: KnownReference(row["fingerprint"], row["payment_id"])
                    for row in rows
                }
            if claimed_refs:
                late = await self._recorded_before_retention(connection, claimed_refs)
                claimed_refs -= late.keys()
                result.existing.update(late)
            result.created = [
                record for record in records if record.reference_number in claimed_refs
            ]
            if not result.created:
                return result
            payments = []
            for record in result.created:
                payments.append(
                    (
                        record.payment_id,
                        record.reference_number,
                        record.loan_account_number,
                        record.cif,
                        record.amount,
                        naive_utc(record.payment_date),
                        record.payment_channel,
                        record.source,
                        to_json(record.metadata).decode(),
                        record.currency,
                    )
                )
                result.events.append(OutgoingEvent.of(record, recorded_text))
            batch_id = uuid.uuid4()
            await connection.copy_records_to_table(
                "payments", schema_name="payment_service", columns=PAYMENT_COLUMNS, records=payments
            )
            await connection.execute(
                ADD_OUTBOX_BATCH,
                batch_id,
                self.events_topic,
                [event.event_id for event in result.events],
                [event.key for event in result.events],
                [event.payload for event in result.events],
            )
            result.outbox_batches.append(batch_id)
        return result

    async def _recorded_before_retention(
        self, connection: asyncpg.Connection, claimed: set[str]
    ) -> dict[str, KnownReference]:
        """Claimed references that were recorded before retention removed them: late duplicates.

        Read after the claim, in its transaction: a retention run that removed one of
        these references committed its watermark first, so the watermark is visible
        here whenever the claim could succeed because of it.
        """
        pruned_before = await connection.fetchval(RETENTION_WATERMARK)
        if pruned_before is None:
            return {}
        # A payment is recorded at most max_future before its payment_date, so every
        # payment whose reference was removed has a payment_date before this.
        horizon = pruned_before + self.max_future + timedelta(days=1)
        rows = await connection.fetch(RECORDED_BEFORE, sorted(claimed), horizon)
        if not rows:
            return {}
        late = {
            row["reference_number"]: KnownReference(
                fingerprint_of(defining_fields_of(row)), row["id"]
            )
            for row in rows
        }
        await connection.execute(
            RESTORE_REFERENCES,
            list(late),
            [known.payment_id for known in late.values()],
            [row["payment_date"] for row in rows],
            [known.fingerprint for known in late.values()],
        )
        log.info(
            "%d references recorded before reference retention came again (late duplicates "
            "or conflicts); their first payments stand",
            len(late),
        )
        return late

    @contextlib.asynccontextmanager
    async def holding(self, batch_ids: Sequence[uuid.UUID]) -> AsyncIterator[None]:
        """Hold these outbox rows against the relay while the body runs (the fast path's publish).

        A row is its worker's until ``created_at`` plus the lease; this renews the
        lease every third of it, so only a worker that died (or froze for a whole
        lease) lets the relay publish what it may still be publishing.
        """
        if not batch_ids:
            yield
            return
        keeper = asyncio.create_task(self._renew(list(batch_ids)))
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _renew(self, batch_ids: list[uuid.UUID]) -> None:
        every = self.outbox_lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            try:
                await self.pool.execute(RENEW_LEASES, batch_ids, self.outbox_lease_seconds)
            except Exception as exc:
                # Best effort, never the publish's failure; the relay cannot take the
                # rows while Postgres is away either.
                log.warning(
                    "could not renew the outbox lease of %d batches (%r); the relay may "
                    "publish their events too if this lasts OUTBOX_RELAY_MIN_AGE_SECONDS",
                    len(batch_ids),
                    exc,
                )

    async def mark_sent(self, batch_ids: Sequence[uuid.UUID]) -> None:
        """These batches' events reached Kafka: delete their outbox rows."""
        if batch_ids:
            await self.pool.execute(MARK_SENT, list(batch_ids))
