"""Reading the staging table into ``payment.intake``, claimed batch after claimed batch.

A batch is claimed with ``FOR UPDATE SKIP LOCKED`` inside a transaction that
stays open until the broker has acknowledged every record of it; only then are
the rows marked processed and the batch logged, in the same transaction. A crash
in between rolls the claim back, so the rows are published again later and the
record agent's dedup absorbs the repeat. A row is never marked processed without
having been published (or dead-lettered).

One drain runs at a time (an advisory lock, held for the whole drain by a
transaction of its own, which Postgres ends if the worker freezes), and in it two
batches overlap: once a full batch is claimed and checked, the next one
is claimed and checked while the first one is published, marked and committed.
The next batch's records go out only after the batch before it is acknowledged,
so the intake gets the rows in id order (a row that repeats an earlier row's
reference comes after it) — except when a batch fails and is retried or left to
the next run: the batch after it goes on.

Failures follow :mod:`app.recording.failures`: an outage leaves the batch unprocessed and
is retried (``STAGING_MAX_RETRIES`` times, then at the next run). A row that
cannot be read for a reason nobody foresaw is dead-lettered
as ``unprocessable`` with the rest of its batch published; a batch that keeps
failing for a reason nobody foresaw is claimed in halves until the row at fault
is alone, and that row is dead-lettered as ``unprocessable`` and marked
processed. Dead letters too large for the broker are cut down
(:func:`app.kafka.codecs.cut_down`): the row in Postgres stays the full copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
from pydantic import ValidationError

from app.instruments import DECISIONS, STAGING_BATCH_SECONDS, STAGING_ROWS
from app.intake.process_pool import ProcessPool
from app.kafka.codecs import dead_letter_message, encode_record
from app.kafka.publisher import Message
from app.kafka.topics import DLQ, INTAKE
from app.models import (
    METADATA_MAX_DEPTH,
    DateWindow,
    DeadLetter,
    Decision,
    FieldError,
    PaymentRecord,
    beyond_retention,
    field_errors,
    naive_utc,
)
from app.recording import audit_trail, dedup, failures
from app.recording.payment_store import recorded_fingerprints
from app.storage import staging_table

log = logging.getLogger(__name__)

#: Pause before retry n is RETRY_BASE_SECONDS * 2**(n-1).
RETRY_BASE_SECONDS = 1.0

#: Rows checked and encoded per event-loop turn when the worker does it itself
#: (STAGING_HELPER_PROCESSES=0): at ~20-50 µs a row (by the hour) a turn holds the
#: loop 2-5 ms, not the 20-50 ms of a whole batch, so the record agent and the
#: decisions sharing the loop are not held up behind it.
ROWS_PER_TURN = 100


class Turn:
    """Where one batch of a drain is, for the drain and for the batch after it."""

    def __init__(self, before: Turn | None) -> None:
        self.before = before
        #: Set once the batch's rows are claimed and checked, or it ended.
        self.claimed = asyncio.Event()
        #: Whether it claimed as many rows as it could: more may be waiting.
        self.full = False
        #: Set once its records are acknowledged, or it ended.
        self.published = asyncio.Event()

    def end(self) -> None:
        self.claimed.set()
        self.published.set()
        self.before = None  # a long drain must not keep a chain of every batch


@dataclass
class BatchSummary:
    """One staging batch, as written to ``staging_process_log``."""

    first_id: int = 0
    last_id: int = 0
    total: int = 0
    published: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: How many rows the batch could claim (less than STAGING_BATCH_SIZE while isolating a row).
    limit: int = 0


def record_from_row(
    row: asyncpg.Record | Mapping[str, Any], window: DateWindow | None, now: datetime
) -> PaymentRecord:
    """A staging row as a canonical record (raises ``ValidationError``).

    ``window`` None checks the structure only (a DLQ replay: the agent checks the window).
    """
    metadata = row["metadata"]
    return PaymentRecord.model_validate(
        {
            "reference_number": row["reference_number"],
            "loan_account_number": row["loan_account_number"],
            "cif": row["cif"],
            "amount": row["amount"],
            "payment_date": row["payment_date"],
            "payment_channel": row["payment_channel"],
            "metadata": None if metadata is None else _metadata(metadata),
            "source": "staging",
            "source_id": str(row["id"]),
            "received_at": now,
        },
        context={"window": window},
    )


def _metadata(text: str) -> Any:
    """A row's metadata column, parsed; nesting too deep for json comes back too deep to accept.

    Postgres stores jsonb nested thousands of levels deep; Python's parser stops at
    about a thousand (RecursionError). Such metadata is far past METADATA_MAX_DEPTH,
    so the model is handed just too deep a value and refuses it with its field error.
    """
    try:
        return json.loads(text)
    except RecursionError:
        too_deep: dict[str, Any] = {}
        for _ in range(METADATA_MAX_DEPTH):
            too_deep = {"nested": too_deep}
        return too_deep


def _row_as_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row as a dead letter carries it (metadata as the text Postgres gave)."""
    return {
        "id": row["id"],
        "reference_number": row["reference_number"],
        "loan_account_number": row["loan_account_number"],
        "cif": row["cif"],
        "amount": str(row["amount"]),
        "payment_date": row["payment_date"].isoformat(),
        "payment_channel": row["payment_channel"],
        "metadata": row["metadata"],
    }


#: The columns of staging_table.CLAIM_ROWS, in order: rows travel to helper processes as tuples.
ROW_COLUMNS = (
    "id",
    "reference_number",
    "loan_account_number",
    "cif",
    "amount",
    "payment_date",
    "payment_channel",
    "metadata",
)


class StagedRecord(NamedTuple):
    """A valid staging row, checked and encoded for the intake topic."""

    reference_number: str
    value: bytes
    row_id: int
    channel: str | None
    #: The checked record, or its fingerprint when a helper process checked it (the
    #: record does not travel back). The poller asks for the fingerprint only when
    #: it has seen the reference before (recorded, or earlier in the batch): ~7 µs a
    #: row saved on a worker's loop for the usual new reference.
    checked: PaymentRecord | str

    @property
    def fingerprint(self) -> str:
        checked = self.checked
        return checked if isinstance(checked, str) else checked.fingerprint


@dataclass
class PreparedRows:
    """A claimed batch, checked and encoded: what to publish, and what failed and why."""

    #: The valid rows, in id order.
    records: list[StagedRecord] = field(default_factory=list)
    letters: list[Message] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: The invalid rows' dead letters (``letters`` holds them encoded), for the audit trail.
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def extend(self, more: PreparedRows) -> None:
        """Append ``more`` (the rows after these) to these."""
        self.records.extend(more.records)
        self.letters.extend(more.letters)
        self.errors.extend(more.errors)
        self.dead_letters.extend(more.dead_letters)

    def add_letter(self, letter: DeadLetter) -> None:
        """A row that is not published: its dead letter, and its entry in the batch's errors."""
        self.errors.append(row_error(letter))
        self.letters.append(dead_letter_message(letter))
        self.dead_letters.append(letter)


def row_letter(
    row: Mapping[str, Any], reason: Any, details: list[FieldError], now: datetime
) -> DeadLetter:
    """The dead letter of staging row ``row`` (cut down later if it is too large to send)."""
    return DeadLetter(
        reason=reason,
        details=details,
        reference_number=row["reference_number"],
        source="staging",
        source_id=str(row["id"]),
        original=_row_as_json(row),
        failed_at=now,
    )


def row_error(letter: DeadLetter) -> dict[str, Any]:
    """A dead-lettered row as ``staging_process_log.error_details`` lists it."""
    return {
        "id": int(letter.source_id or 0),
        "reference_number": letter.reference_number,
        "errors": [error.model_dump() for error in letter.details],
    }


def prepare_rows(
    rows: Sequence[Sequence[Any]], window: DateWindow, now: datetime, keep_records: bool = True
) -> PreparedRows:
    """Check and encode staging rows (CPU only, so it can run in a helper process).

    ``keep_records`` False (a helper process) keeps each record's fingerprint instead.
    """
    prepared = PreparedRows()
    for values in rows:
        row = dict(zip(ROW_COLUMNS, values, strict=True))
        try:
            record = record_from_row(row, window, now)
        except ValidationError as exc:
            reason = "beyond_retention" if beyond_retention(exc) else "invalid"
            prepared.add_letter(row_letter(row, reason, field_errors(exc), now))
            continue
        except Exception as exc:
            # CPU only, no server involved: whatever fails here is the row's own doing.
            details = [FieldError(field="record", message=failures.describe(exc))]
            prepared.add_letter(row_letter(row, "unprocessable", details, now))
            continue
        prepared.records.append(
            StagedRecord(
                record.reference_number,
                encode_record(record),
                row["id"],
                record.payment_channel,
                record if keep_records else record.fingerprint,
            )
        )
    return prepared


class StagingPoller:
    """Moves staging rows to the intake topic; :meth:`drain` is the timer's body."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Any,
        *,
        batch_size: int,
        max_retries: int,
        window: DateWindow,
        helpers: ProcessPool | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        audit_log: bool = True,
    ) -> None:
        self.pool = pool
        self.audit_log = audit_log
        self.helpers = helpers or ProcessPool(0)
        self.publisher = publisher
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.window = window
        self._sleep = sleep

    async def drain(self) -> int:
        """Poll batches while full ones keep coming, two at once; return the rows moved.

        Returns 0 at once when another drain holds the poller lock (a leader handoff),
        or when Postgres cannot be reached (the next run tries again). Never raises
        but when cancelled: an error escaping a timer would stop the worker.
        """
        try:
            async with self.pool.acquire() as holder:
                lock = holder.transaction()
                await lock.start()
                try:
                    if not await staging_table.take_poller_lock(holder):
                        log.debug("staging: another poller holds the lock; skipping this run")
                        return 0
                    return await self._drain(holder)
                finally:
                    await _release(lock)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Postgres away when taking the lock; anything else is a bug: say so loudly.
            outage = failures.is_outage(exc)
            log.log(
                logging.WARNING if outage else logging.ERROR,
                "staging: this run stopped (%r); the next run goes on",
                exc,
                exc_info=None if outage else exc,
            )
            return 0

    async def _drain(self, holder: asyncpg.Connection) -> int:
        moved = 0
        started = time.monotonic()
        older: tuple[asyncio.Task[BatchSummary | None], Turn] | None = None
        in_flight: set[asyncio.Task[BatchSummary | None]] = set()
        batches = 0
        try:
            while True:
                if batches and not await _still_the_poller(holder):
                    if older is not None:  # the batch in hand ends in its own transaction
                        done = await older[0]
                        moved += 0 if done is None else done.total
                    break
                batches += 1
                turn = Turn(older[1] if older else None)
                task = asyncio.create_task(self._batch(turn))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                await turn.claimed.wait()
                overlapped = older is not None
                if older is not None:  # the batch before this one ends first
                    done, older = await older[0], None
                    if done is None:  # failed: left to the next run
                        summary = await task
                        moved += 0 if summary is None else summary.total
                        break
                    moved += done.total
                if turn.full and not task.done():
                    older = (task, turn)  # claim the next batch meanwhile
                    continue
                summary = await task
                if summary is not None:
                    moved += summary.total
                    if summary.total == summary.limit:
                        continue
                elif overlapped:
                    # It found nothing while the batch before held rows, or that batch
                    # was split after a failure: look again, one batch at a time.
                    continue
                break
        finally:
            # Cancelled (the worker stops): no batch outlives the drain and its lock.
            for running in in_flight:
                running.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        if moved >= self.batch_size:
            elapsed = time.monotonic() - started
            log.info(
                "staging: moved %d rows to %s in %.1f s (%.0f rows/s)",
                moved,
                INTAKE,
                elapsed,
                moved / max(elapsed, 1e-9),
            )
        return moved

    async def _batch(self, turn: Turn) -> BatchSummary | None:
        try:
            return await self._batch_with_retries(turn)
        finally:
            turn.end()

    async def _batch_with_retries(self, turn: Turn) -> BatchSummary | None:
        """One batch, by the failure policy; None when there was nothing to do or it failed.

        An outage is retried with backoff, then left to the next run. Anything else
        is retried a few times, then the batch is claimed in halves (the rows are
        claimed in id order, so the first half is the same rows) until the row at
        fault is alone; that row is dead-lettered and the drain goes on.
        """
        limit = self.batch_size
        attempt = 0
        while True:
            attempt += 1
            started = datetime.now(UTC)
            summary: BatchSummary | None
            try:
                summary = await self.poll_once(turn, limit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if failures.is_outage(exc):
                    if attempt <= self.max_retries:
                        await self._pause("batch failed", attempt, self.max_retries + 1, exc)
                        continue
                    # The rows stay unprocessed: the next tick claims them again. Marking
                    # them anyway would lose payments; the failed log row tells the operator.
                    log.error(
                        "staging: batch failed %d times, giving up until the next run: %r",
                        attempt,
                        exc,
                    )
                    await self._log_failure(started, exc, attempt)
                    return None
                tries = 1 if failures.is_record_error(exc) else failures.UNFORESEEN_ATTEMPTS
                if attempt < tries:
                    await self._pause("batch failed unexpectedly", attempt, tries, exc)
                    continue
                attempt = 0
                if limit > 1:
                    limit //= 2
                    log.warning(
                        "staging: a batch keeps failing (%s); claiming %d rows at a time "
                        "to find the row at fault",
                        failures.describe(exc),
                        limit,
                    )
                    continue
                summary = await self._dead_letter_next(exc)
            if summary is None or summary.total == 0:
                return None
            return summary

    async def _prepare(self, rows: list[asyncpg.Record], now: datetime) -> PreparedRows:
        """``prepare_rows`` in a helper process, or here ROWS_PER_TURN rows per loop turn."""
        if self.helpers.size:  # plain tuples travel to the helper (pickled)
            plain = [tuple(row) for row in rows]
            return await self.helpers.run(prepare_rows, plain, self.window, now, False)
        prepared = PreparedRows()
        for start in range(0, len(rows), ROWS_PER_TURN):
            if start:
                await asyncio.sleep(0)
            prepared.extend(prepare_rows(rows[start : start + ROWS_PER_TURN], self.window, now))
        return prepared

    async def _pause(self, what: str, attempt: int, attempts: int, exc: BaseException) -> None:
        pause = RETRY_BASE_SECONDS * 2 ** (attempt - 1)
        log.warning(
            "staging: %s (attempt %d of %d), retrying in %.0f s: %r",
            what,
            attempt,
            attempts,
            pause,
            exc,
        )
        await self._sleep(pause)

    async def _dead_letter_next(self, error: BaseException) -> BatchSummary | None:
        """Dead-letter the first unprocessed row, which keeps failing alone, and mark it processed.

        Failing here (Kafka away) leaves the row for the next run, as any batch.
        """
        started = datetime.now(UTC)
        try:
            async with self.pool.acquire() as connection, connection.transaction():
                rows = await staging_table.claim(connection, 1)
                if not rows:
                    return None
                row = rows[0]
                details = [FieldError(field="record", message=failures.describe(error))]
                letter = row_letter(row, "unprocessable", details, started)
                log.error(
                    "staging: row %d (reference %s) keeps failing (%s); dead-lettering it as "
                    "unprocessable and going on. Fix the cause, then requeue or replay it",
                    row["id"],
                    row["reference_number"],
                    failures.describe(error),
                    exc_info=error,
                )
                await self.publisher.publish(DLQ, [dead_letter_message(letter)])
                await staging_table.mark_processed(connection, [row["id"]])
                summary = BatchSummary(
                    first_id=row["id"], last_id=row["id"], total=1, errors=[row_error(letter)]
                )
                summary.limit = 1
                await _log_batch(connection, summary, "completed", started, summary.errors)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("staging: could not dead-letter the row at fault: %r; next run", exc)
            await self._log_failure(started, exc, 1)
            return None
        if self.audit_log:
            audit_trail.decisions([], [letter])
        STAGING_ROWS.labels("invalid").inc()
        return summary

    async def poll_once(self, turn: Turn, limit: int | None = None) -> BatchSummary:
        """Claim, publish, mark, log: one batch in one transaction, in a drain (it holds the lock).

        ``limit``: claim at most this many rows (default STAGING_BATCH_SIZE). The
        records go out once ``turn.before`` is published; ``turn`` says when this
        batch is claimed and published.
        """
        started = datetime.now(UTC)
        clock = time.perf_counter()
        summary = BatchSummary(limit=limit or self.batch_size)
        # The poller decides two things itself: invalid rows (dead letters) and exact
        # repeats (duplicates that never travel). They belong in the audit trail too.
        auditing = self.audit_log and audit_trail.enabled()
        repeats: list[Decision] = []
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await staging_table.claim(connection, summary.limit)
            if not rows:
                return summary
            summary.first_id, summary.last_id, summary.total = (
                rows[0]["id"],
                rows[-1]["id"],
                len(rows),
            )
            prepared = await self._prepare(rows, started)
            summary.errors = prepared.errors

            # The plan's bulk duplicate check: exact repeats of what Postgres already
            # holds, or of an earlier row in this batch, need not travel. Anything
            # else (new, or a possible conflict) goes to the record agent, which decides.
            known = await recorded_fingerprints(
                connection, (staged.reference_number for staged in prepared.records)
            )
            first: dict[str, StagedRecord] = {}  # each reference's first row in this batch
            outgoing: list[Message] = []
            for staged in prepared.records:
                reference = staged.reference_number
                earlier = first.setdefault(reference, staged)
                recorded = known.get(reference)
                if recorded is None and earlier is not staged:
                    recorded = earlier.fingerprint
                if recorded is not None and dedup.is_exact_repeat(staged.fingerprint, recorded):
                    summary.duplicates += 1
                    if auditing:
                        repeats.append(_repeat(staged))
                    continue
                outgoing.append((reference.encode(), staged.value))
            summary.published = len(outgoing)

            turn.full = len(rows) == summary.limit
            turn.claimed.set()  # the drain may claim the next batch now
            if turn.before is not None:
                await turn.before.published.wait()  # in id order
                turn.before = None
            await asyncio.gather(
                self.publisher.publish(INTAKE, outgoing),
                self.publisher.publish(DLQ, prepared.letters),
            )
            turn.published.set()
            await staging_table.mark_processed(connection, [row["id"] for row in rows])
            details = summary.errors or None
            await _log_batch(connection, summary, "completed", started, details)
        if auditing:
            audit_trail.decisions(repeats, prepared.dead_letters)
        STAGING_BATCH_SECONDS.observe(time.perf_counter() - clock)
        STAGING_ROWS.labels("published").inc(summary.published)
        STAGING_ROWS.labels("duplicate").inc(summary.duplicates)
        # Decided here, never by the record agent: counted once, as every decision is.
        DECISIONS.labels("staging", "duplicate").inc(summary.duplicates)
        STAGING_ROWS.labels("invalid").inc(len(summary.errors))
        log.debug(
            "staging: ids %d-%d: %d rows, %d published, %d duplicates, %d invalid",
            summary.first_id,
            summary.last_id,
            summary.total,
            summary.published,
            summary.duplicates,
            len(summary.errors),
        )
        return summary

    async def _log_failure(self, started: datetime, exc: BaseException, attempts: int) -> None:
        try:
            async with self.pool.acquire() as connection:
                first = await staging_table.oldest_unprocessed_id(connection)
                empty = BatchSummary(first_id=first or 0, last_id=first or 0)
                details = {"error": repr(exc), "attempts": attempts}
                await _log_batch(connection, empty, "failed", started, details)
        except Exception as log_exc:
            log.error("staging: could not log the failed batch either: %r", log_exc)


async def _still_the_poller(holder: asyncpg.Connection) -> bool:
    """Whether the drain's lock still holds; it also resets the lock's idle timer.

    False once Postgres has ended the lock's transaction: the worker froze, or a
    batch stalled, for longer than DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS, and
    another worker's poller may have taken over meanwhile.
    """
    try:
        if await staging_table.take_poller_lock(holder):
            return True
        lost = "its transaction no longer holds it"
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        lost = repr(exc)
    log.warning(
        "staging: the poller lock is gone (%s); this run stops after the batch in hand "
        "and the next run takes the lock again",
        lost,
    )
    return False


async def _release(lock: asyncpg.transaction.Transaction) -> None:
    """End the lock's transaction; if Postgres went away, the lock went with the session."""
    try:
        await lock.rollback()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        # A connection the pool takes back is reset (its transaction rolled back) or closed.
        log.info("staging: the poller lock ends with its connection (%r)", exc)


async def _log_batch(
    connection: asyncpg.Connection,
    summary: BatchSummary,
    status: str,
    started: datetime,
    details: Any,
) -> None:
    """One ``staging_process_log`` row for ``summary``."""
    await staging_table.log_run(
        connection,
        staging_table.Run(
            first_id=summary.first_id,
            last_id=summary.last_id,
            total=summary.total,
            published=summary.published,
            duplicates=summary.duplicates,
            errors=len(summary.errors),
            status=status,
            started_at=naive_utc(started),
            completed_at=naive_utc(datetime.now(UTC)),
            details=details,
        ),
    )


def _repeat(staged: StagedRecord) -> Decision:
    """The duplicate decision for a row the poller kept from travelling."""
    return dedup.decision(
        staged.reference_number,
        "duplicate",
        source="staging",
        source_id=str(staged.row_id),
        channel=staged.channel,
    )
