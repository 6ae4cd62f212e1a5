"""The dead-letter topic from the command line: listing it, and replaying fixed records.

A replay publishes a dead letter's original record to ``payment.intake`` again,
keyed and encoded exactly as the poller and the webhooks do it, so it meets the
same dedup as any other record: it can never record a payment twice. Both scans
stop at the end offsets seen when they start: what a replay dead-letters again
is left for the next run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, get_args

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from app.exceptions import CommandError, PublishFailed
from app.intake.staging import record_from_row
from app.kafka.codecs import decode_dead_letter, encode_record
from app.kafka.publisher import Message, Publisher
from app.kafka.topic_reader import TopicReader, kafka_unreachable
from app.kafka.topics import DLQ, INTAKE
from app.models import DeadLetter, DeadLetterReason, PaymentRecord, field_errors
from app.recording.payment_store import KNOWN_REFERENCES
from app.settings import Settings
from app.storage.database import connect

Say = Callable[[str], None]

#: Records published (and checked against Postgres) per round trip.
REPLAY_BATCH = 1000

#: Why a dead letter was not replayed (the report counts each).
NO_ORIGINAL = "no original record (undecodable bytes)"
CUT_DOWN = "original left out of a cut-down letter (staging: requeue the row)"
NOT_A_RECORD = "original is still not a valid record"
REPEAT = "repeats an earlier dead letter of this run"
RECORDED_SAME = "already recorded with the same content"
RECORDED_OTHER = "reference recorded with other content (would conflict again)"
UNREADABLE = "unreadable"


def first_problem(letter: DeadLetter) -> str:
    """The differing fields of a conflict, else the first field error, else ''."""
    if letter.differing_fields:
        return "differs: " + ",".join(letter.differing_fields)
    if letter.details:
        detail = letter.details[0]
        more = f" (+{len(letter.details) - 1} more)" if len(letter.details) > 1 else ""
        return f"{detail.field}: {detail.message}{more}"
    return ""


def describe(partition: int, offset: int, letter: DeadLetter) -> str:
    """One line for a dead letter (``dlq list``)."""
    failed_at = letter.failed_at.isoformat(timespec="seconds")
    source = f"{letter.source or '-'}:{letter.source_id or '-'}"
    return (
        f"{partition}/{offset}  {letter.reason:<22}  ref={letter.reference_number or '-'}  "
        f"source={source}  failed_at={failed_at}  {first_problem(letter)}"
    ).rstrip()


def summary(counts: Mapping[str, int]) -> list[str]:
    """The count by reason, most frequent first, then the total."""
    lines = [f"  {reason}: {count}" for reason, count in Counter(counts).most_common()]
    return [*lines, f"total: {sum(counts.values())}"]


@dataclass(frozen=True)
class Skip:
    """A dead letter that is not replayed: ``why`` is counted, ``detail`` printed."""

    why: str
    detail: str = ""


def record_of(letter: DeadLetter) -> PaymentRecord | Skip:
    """The record a dead letter carries, checked structurally, or why there is none.

    The date window is left to the record agent, which checks it on every record
    (replaying after widening PAYMENT_DATE_MIN is the point). A staging row
    dead-lettered by the poller becomes the record the poller would have built.
    """
    original = letter.original
    if not isinstance(original, dict):
        cut = any(detail.field == "original" for detail in letter.details)
        return Skip(CUT_DOWN if cut else NO_ORIGINAL)
    try:
        if letter.source == "staging" and "source" not in original:
            row = dict(original)
            if isinstance(row.get("metadata"), dict | list):
                row["metadata"] = json.dumps(row["metadata"])
            return record_from_row(row, None, letter.failed_at)
        return PaymentRecord.model_validate(original)
    except ValidationError as exc:
        problem = field_errors(exc)[0]
        return Skip(NOT_A_RECORD, f"{problem.field}: {problem.message}")
    except (KeyError, TypeError, ValueError) as exc:
        return Skip(NOT_A_RECORD, repr(exc))


def intake_message(record: PaymentRecord) -> Message:
    """The intake key and value, as the poller and the webhooks publish them."""
    return record.reference_number.encode(), encode_record(record)


def _parse(value: bytes | None) -> DeadLetter | None:
    try:
        return decode_dead_letter(value or b"")
    except ValidationError:
        return None


def _progress(say: Say) -> Callable[[int, int], None]:
    return lambda read, total: say(f"... scanned {read} of about {total} dead letters")


# --- dlq list ----------------------------------------------------------------------


async def list_letters(
    settings: Settings,
    *,
    reason: str | None,
    limit: int | None,
    say: Say,
    note: Say,
) -> Counter[str]:
    """Print one line per dead letter (up to ``limit``), return the count by reason."""
    counts: Counter[str] = Counter()
    shown = 0
    async with TopicReader(settings, "dlq-list") as reader:
        bounds = await reader.bounds(await reader.partitions(DLQ))
        note(f"reading {DLQ}: {sum(end - first for first, end in bounds.values())} records")
        async for message in reader.read(bounds, _progress(note)):
            letter = _parse(message.value)
            found = UNREADABLE if letter is None else letter.reason
            if reason is not None and found != reason:
                continue
            counts[found] += 1
            if limit is not None and shown >= limit:
                continue
            shown += 1
            if letter is None:
                say(f"{message.partition}/{message.offset}  {UNREADABLE}: not a dead letter")
            else:
                say(describe(message.partition, message.offset, letter))
    if limit is not None and sum(counts.values()) > shown:
        say(f"({sum(counts.values()) - shown} more not shown: raise --limit)")
    return counts


# --- dlq replay --------------------------------------------------------------------


@dataclass
class ReplayReport:
    """What a replay did: dead letters scanned and matched, records sent, skips by why."""

    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """The counts, for the audit row and the HTTP answer."""
        return {
            "scanned": self.scanned,
            "matched": self.matched,
            "replayed": self.replayed,
            "skipped": dict(self.skipped),
        }

    def lines(self, dry_run: bool) -> list[str]:
        verb = "would replay" if dry_run else "replayed"
        lines = [
            f"scanned {self.scanned} dead letters, {self.matched} matching",
            f"{verb}: {self.replayed}",
            f"skipped: {sum(self.skipped.values())}",
        ]
        lines += [f"  {why}: {count}" for why, count in self.skipped.most_common()]
        return lines


@dataclass(frozen=True)
class _Candidate:
    partition: int
    offset: int
    record: PaymentRecord


class _Replayer:
    """Turns dead letters into records, checks them against Postgres in batches, sends the new."""

    def __init__(
        self,
        connection: Any,
        publisher: Publisher | None,
        report: ReplayReport,
        say: Say,
    ) -> None:
        self.connection = connection
        self.publisher = publisher
        self.report = report
        self.say = say
        self.pending: list[_Candidate] = []
        #: (reference, fingerprint) of every record queued in this run.
        self.seen: set[tuple[str, str]] = set()

    async def consider(self, partition: int, offset: int, letter: DeadLetter) -> None:
        """Queue the letter's record for the next batch, or count why not."""
        outcome = record_of(letter)
        if isinstance(outcome, Skip):
            self.report.skipped[outcome.why] += 1
            detail = f": {outcome.detail}" if outcome.detail else ""
            self.say(
                f"skip {partition}/{offset}  ref={letter.reference_number or '-'}  "
                f"{outcome.why}{detail}"
            )
            return
        identity = (outcome.reference_number, outcome.fingerprint)
        if identity in self.seen:
            self.report.skipped[REPEAT] += 1
            return
        self.seen.add(identity)
        self.pending.append(_Candidate(partition, offset, outcome))
        if len(self.pending) >= REPLAY_BATCH:
            await self.flush()

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        # The poller's bulk duplicate check: what Postgres holds need not travel.
        # It only saves work; the record agent's dedup is what makes a replay safe.
        references = list({candidate.record.reference_number for candidate in batch})
        known = {
            row["reference_number"]: row["fingerprint"]
            for row in await self.connection.fetch(KNOWN_REFERENCES, references)
        }
        outgoing: list[Message] = []
        for candidate in batch:
            record = candidate.record
            recorded = known.get(record.reference_number)
            if recorded == record.fingerprint:
                self.report.skipped[RECORDED_SAME] += 1
                continue
            if recorded is not None:
                self.report.skipped[RECORDED_OTHER] += 1
                continue
            if self.publisher is None:
                self.say(
                    f"would replay {candidate.partition}/{candidate.offset}  "
                    f"ref={record.reference_number}  source={record.source}:{record.source_id}"
                )
            outgoing.append(intake_message(record))
        if self.publisher is not None and outgoing:
            try:
                await self.publisher.publish(INTAKE, outgoing)
            except PublishFailed as exc:
                raise kafka_unreachable(self.publisher.settings, exc) from exc
            self.say(f"... published {self.report.replayed + len(outgoing)} records to {INTAKE}")
        self.report.replayed += len(outgoing)


async def replay(
    settings: Settings, *, reason: str | None, dry_run: bool, say: Say, note: Say
) -> ReplayReport:
    """Publish the records of matching dead letters to the intake topic again (see module)."""
    report = ReplayReport()
    async with AsyncExitStack() as resources:
        reader = await resources.enter_async_context(TopicReader(settings, "dlq-replay"))
        # Captured before anything is sent: letters this replay causes are not read.
        bounds = await reader.bounds(await reader.partitions(DLQ))
        note(f"reading {DLQ}: {sum(end - first for first, end in bounds.values())} records")
        connection = await connect(settings)
        resources.push_async_callback(connection.close)
        publisher = None
        if not dry_run:
            publisher = Publisher(settings, name="dlq-replay")
            try:
                await publisher.start()
            except (KafkaError, OSError) as exc:
                raise kafka_unreachable(settings, exc) from exc
            resources.push_async_callback(publisher.stop)
        replayer = _Replayer(connection, publisher, report, say)
        async for message in reader.read(bounds, _progress(note)):
            report.scanned += 1
            letter = _parse(message.value)
            if letter is None:
                if reason is None:
                    report.matched += 1
                    report.skipped[UNREADABLE] += 1
                continue
            if reason is None or letter.reason == reason:
                report.matched += 1
                await replayer.consider(message.partition, message.offset, letter)
        await replayer.flush()
    return report


def check_reason(reason: str | None) -> str | None:
    """``reason`` if it is a DeadLetter reason (or None); CommandError otherwise."""
    known = get_args(DeadLetterReason)
    if reason is not None and reason not in known:
        raise CommandError(f"unknown reason {reason!r}: use one of {', '.join(known)}")
    return reason
