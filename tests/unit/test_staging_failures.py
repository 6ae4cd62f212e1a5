"""The staging poller's failure policy with a fake Postgres: one bad row never holds the table."""

from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from asyncpg.exceptions import IdleInTransactionSessionTimeoutError, LockNotAvailableError
from prometheus_client import REGISTRY

from app import models
from app.exceptions import PublishFailed
from app.intake import staging
from app.intake.staging import StagingPoller, prepare_rows
from app.kafka.codecs import DEAD_LETTER_MAX_BYTES, decode_dead_letter, decode_record
from app.kafka.topics import DLQ, INTAKE
from app.models import DateWindow
from app.recording import payment_store
from app.storage import staging_table

WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))
YESTERDAY = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=1)


def row(number: int, metadata: str = "{}", reference: str | None = None) -> dict[str, Any]:
    return {
        "id": number,
        "reference_number": reference or f"REF-{number}",
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": Decimal("10.00"),
        "payment_date": YESTERDAY,
        "payment_channel": "bank",
        "metadata": metadata,
    }


class Record(tuple[Any, ...]):
    """An asyncpg Record: a tuple of values, also read by column name."""

    def __new__(cls, values: dict[str, Any]) -> Record:
        made = super().__new__(cls, values.values())
        made.columns = values  # type: ignore[attr-defined]
        return made

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.columns[key]  # type: ignore[attr-defined]
        return super().__getitem__(key)


class FakeConnection:
    """The few statements the poller runs, on a list of staging rows; writes apply on commit."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.marked: list[int] = []
        self.logged: list[tuple[Any, ...]] = []
        self.claimed: list[int] = []
        self.in_transaction = False

    async def fetchval(self, query: str, *args: Any) -> Any:
        assert "min(id)" in query
        pending = [r["id"] for r in self.db.rows if r["id"] not in self.db.processed]
        return min(pending, default=None)

    async def fetch(self, query: str, *args: Any) -> list[Record]:
        if query == staging_table.CLAIM_ROWS:  # FOR UPDATE SKIP LOCKED
            taken = self.db.processed | self.db.locked
            rows = [r for r in self.db.rows if r["id"] not in taken][: args[0]]
            self.claimed = [r["id"] for r in rows]
            self.db.locked.update(self.claimed)
            return [Record(r) for r in rows]
        assert query == payment_store.KNOWN_REFERENCES
        return []

    async def execute(self, query: str, *args: Any) -> None:
        if query == staging_table.POLLER_LOCK:
            assert self.in_transaction, "the poller lock is a transaction's"
            assert not args, "sent by the simple protocol: no snapshot kept"
        elif query == staging_table.MARK_PROCESSED:
            self.marked += args[0]
        else:
            assert query == staging_table.LOG_RUN
            (self.logged if self.in_transaction else self.db.log).append(args)

    def transaction(self) -> FakeTransaction:
        return FakeTransaction(self)


class FakeTransaction:
    """``async with`` (commit at the end) or ``start``/``rollback``, as asyncpg's."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection

    async def start(self) -> None:
        self.connection.in_transaction = True

    async def rollback(self) -> None:
        self._end()

    async def __aenter__(self) -> None:
        await self.start()

    async def __aexit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            self.connection.db.processed.update(self.connection.marked)
            self.connection.db.log += self.connection.logged
        self._end()

    def _end(self) -> None:
        self.connection.in_transaction = False
        self.connection.db.locked.difference_update(self.connection.claimed)


class FakeDatabase:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.processed: set[int] = set()
        self.locked: set[int] = set()  # claimed by an open transaction
        self.log: list[tuple[Any, ...]] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[FakeConnection]:
        yield FakeConnection(self)


class FakePublisher:
    """Kafka: refuses the intake records ``refuse`` names (by key); ``outages`` sends fail."""

    def __init__(self, refuse: frozenset[bytes] = frozenset()) -> None:
        self.topics: dict[str, list[tuple[bytes | None, bytes]]] = {}
        self.refuse = refuse
        self.outages = 0

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        if not messages:
            return
        if self.outages:
            self.outages -= 1
            raise PublishFailed("broker away") from KafkaConnectionError()
        if topic == INTAKE and any(key in self.refuse for key, _ in messages):
            raise RuntimeError("refused")
        for message in messages:
            assert len(message[1]) <= DEAD_LETTER_MAX_BYTES
        self.topics.setdefault(topic, []).extend(messages)

    def keys(self, topic: str) -> list[bytes | None]:
        return [key for key, _ in self.topics.get(topic, [])]


def poller(db: FakeDatabase, publisher: FakePublisher, batch_size: int = 8) -> StagingPoller:
    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    pauses: list[float] = []
    made = StagingPoller(
        db,  # type: ignore[arg-type]
        publisher,
        batch_size=batch_size,
        max_retries=2,
        window=WINDOW,
        sleep=sleep,
        audit_log=False,
    )
    made.pauses = pauses  # type: ignore[attr-defined]
    return made


async def test_a_row_too_large_to_dead_letter_whole_is_cut_down_and_the_rest_published() -> None:
    huge = json.dumps({"blob": "x" * (2 * 1024 * 1024)})
    db = FakeDatabase([row(1), row(2, metadata=huge), *(row(n) for n in range(3, 12))])
    publisher = FakePublisher()
    moved = await poller(db, publisher).drain()
    assert moved == 11
    assert db.processed == set(range(1, 12))
    assert publisher.keys(INTAKE) == [f"REF-{n}".encode() for n in range(1, 12) if n != 2]
    ((key, value),) = publisher.topics[DLQ]
    letter = decode_dead_letter(value)
    assert (key, letter.reason, letter.source_id) == (b"REF-2", "invalid", "2")
    assert letter.details[0].field == "metadata"
    assert letter.details[-1].field == "original"
    assert "sha256" in letter.details[-1].message


async def test_metadata_nested_too_deep_to_parse_is_an_invalid_row() -> None:
    deep = '{"a":' * 3000 + "1" + "}" * 3000
    db = FakeDatabase([row(1), row(2, metadata=deep), row(3)])
    publisher = FakePublisher()
    await poller(db, publisher).drain()
    assert db.processed == {1, 2, 3}
    assert publisher.keys(INTAKE) == [b"REF-1", b"REF-3"]
    ((_, value),) = publisher.topics[DLQ]
    letter = decode_dead_letter(value)
    assert (letter.reason, letter.reference_number) == ("invalid", "REF-2")
    assert [(d.field, d.message) for d in letter.details] == [
        ("metadata", "must nest at most 32 levels of lists and objects")
    ]
    assert letter.original["metadata"] == deep  # the text, never parsed


async def test_a_row_that_keeps_failing_is_isolated_dead_lettered_and_marked() -> None:
    db = FakeDatabase([row(n) for n in range(1, 21)])
    publisher = FakePublisher(refuse=frozenset({b"REF-6"}))
    made = poller(db, publisher)
    await made.drain()
    assert db.processed == set(range(1, 21))
    intake = publisher.keys(INTAKE)
    assert sorted(intake) == sorted(f"REF-{n}".encode() for n in range(1, 21) if n != 6)
    ((key, value),) = publisher.topics[DLQ]
    letter = decode_dead_letter(value)
    assert (key, letter.reason, letter.source_id) == (b"REF-6", "unprocessable", "6")
    assert letter.details[0].message == "RuntimeError: refused"
    assert letter.original["reference_number"] == "REF-6"
    # bounded: a few tries per claim size, never an endless loop
    assert len(made.pauses) <= 2 * 4 * 3  # type: ignore[attr-defined]


async def test_an_outage_leaves_the_rows_unprocessed_for_the_next_run() -> None:
    db = FakeDatabase([row(1), row(2)])
    publisher = FakePublisher()
    publisher.outages = 3
    made = poller(db, publisher)
    assert await made.drain() == 0
    assert db.processed == set()
    assert publisher.topics.get(DLQ) is None  # nothing dead-lettered for an outage
    assert len(db.log) == 1  # the failed batch, logged
    assert await made.drain() == 2  # Kafka back: the next run publishes them
    assert db.processed == {1, 2}


def test_prepare_rows_never_raises_for_a_row() -> None:
    # Postgres' jsonb never holds this; a row that fails unforeseen all the same.
    rows = [tuple(r.values()) for r in (row(1), row(2, metadata="{not json"), row(3))]
    prepared = prepare_rows(rows, WINDOW, datetime.now(UTC))
    assert [decode_record(staged.value).reference_number for staged in prepared.records] == [
        "REF-1",
        "REF-3",
    ]
    (letter,) = prepared.dead_letters
    assert (letter.reason, letter.reference_number) == ("unprocessable", "REF-2")
    assert letter.details[0].message.startswith("JSONDecodeError: ")
    assert [(e["id"], e["reference_number"]) for e in prepared.errors] == [(2, "REF-2")]


async def test_without_a_helper_rows_are_checked_a_hundred_per_loop_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # STAGING_HELPER_PROCESSES=0: the worker checks a batch itself, and the record agent
    # sharing its event loop gets turns in between (a batch of 1,000 held it ~50 ms).
    rows = [tuple(row(n).values()) for n in range(1, 251)]
    rows[119] = tuple(row(120, metadata="{not json").values())
    now = datetime.now(UTC)
    turns = 0
    chunks: list[tuple[int, int]] = []

    def counted(chunk: list[tuple[Any, ...]], window: DateWindow, at: datetime) -> Any:
        chunks.append((len(chunk), turns))
        return prepare_rows(chunk, window, at)

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(staging, "prepare_rows", counted)
    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        prepared = await poller(FakeDatabase([]), FakePublisher())._prepare(rows, now)
    finally:
        ticker.cancel()
    assert [size for size, _ in chunks] == [100, 100, 50]
    assert chunks[0][1] < chunks[1][1] < chunks[2][1]  # the ticker ran between them
    whole = prepare_rows(rows, WINDOW, now)
    assert prepared.records == whole.records
    assert [r.row_id for r in prepared.records] == [n for n in range(1, 251) if n != 120]
    assert prepared.errors == whole.errors
    assert [letter.source_id for letter in prepared.dead_letters] == ["120"]


def test_a_helper_sends_back_fingerprints_not_records() -> None:
    rows = [tuple(r.values()) for r in (row(1), row(2))]
    now = datetime.now(UTC)
    kept = prepare_rows(rows, WINDOW, now).records
    # As the helper's answer travels: pickled, our own bytes.
    sent = pickle.loads(pickle.dumps(prepare_rows(rows, WINDOW, now, False))).records  # noqa: S301
    assert [staged.checked for staged in sent] == [
        staged.checked.fingerprint  # type: ignore[union-attr]
        for staged in kept
    ]
    assert [staged.fingerprint for staged in sent] == [staged.fingerprint for staged in kept]
    assert [staged.value for staged in sent] == [staged.value for staged in kept]


async def test_a_clean_backlog_goes_to_the_intake_in_order_and_is_marked() -> None:
    db = FakeDatabase([row(n) for n in range(1, 20)])
    publisher = FakePublisher()
    assert await poller(db, publisher, batch_size=5).drain() == 19
    assert db.processed == set(range(1, 20))
    assert publisher.keys(INTAKE) == [f"REF-{n}".encode() for n in range(1, 20)]
    record = decode_record(publisher.topics[INTAKE][0][1])
    assert (record.reference_number, record.source, record.source_id) == ("REF-1", "staging", "1")
    assert publisher.topics.get(DLQ) is None
    assert len(db.log) == 4  # one staging_process_log row per claimed batch


async def test_an_exact_repeat_postgres_holds_is_marked_but_not_published() -> None:
    class KnowsTheFirst(FakeConnection):
        async def fetch(self, query: str, *args: Any) -> list[Record]:
            if query != payment_store.KNOWN_REFERENCES:
                return await super().fetch(query, *args)
            first = prepare_rows([Record(row(1))], WINDOW, datetime.now(UTC)).records[0]
            known = {"reference_number": "REF-1", "fingerprint": first.fingerprint}
            return [Record(known)]

    class Database(FakeDatabase):
        @asynccontextmanager
        async def acquire(self) -> AsyncIterator[FakeConnection]:
            yield KnowsTheFirst(self)

    db = Database([row(1), row(2)])
    publisher = FakePublisher()
    decided = ("payments_decisions_total", {"source": "staging", "outcome": "duplicate"})
    before = REGISTRY.get_sample_value(*decided) or 0.0
    await poller(db, publisher).drain()
    assert db.processed == {1, 2}
    assert publisher.keys(INTAKE) == [b"REF-2"]
    # The repeat is a decision the poller took: counted once, as the agent's are.
    assert (REGISTRY.get_sample_value(*decided) or 0.0) - before == 1


async def test_repeats_within_a_batch_stay_and_only_references_seen_before_are_fingerprinted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other_amount = {**row(4, reference="REF-1"), "amount": Decimal("11.00")}
    rows = [row(1), row(2), row(3, reference="REF-1"), other_amount, row(5)]
    recorded = prepare_rows([Record(row(2))], WINDOW, datetime.now(UTC)).records[0].fingerprint

    class KnowsTheSecond(FakeConnection):
        async def fetch(self, query: str, *args: Any) -> list[Record]:
            if query != payment_store.KNOWN_REFERENCES:
                return await super().fetch(query, *args)
            return [Record({"reference_number": "REF-2", "fingerprint": recorded})]

    class Database(FakeDatabase):
        @asynccontextmanager
        async def acquire(self) -> AsyncIterator[FakeConnection]:
            yield KnowsTheSecond(self)

    hashed: list[str] = []
    real_hash = models._hash_defining_texts

    def counted(texts: tuple[str, ...]) -> str:
        hashed.append(texts[0])
        return real_hash(texts)

    monkeypatch.setattr(models, "_hash_defining_texts", counted)
    db = Database(rows)
    publisher = FakePublisher()
    await poller(db, publisher).drain()
    assert db.processed == {1, 2, 3, 4, 5}
    # REF-2 is recorded as is, row 3 repeats row 1; row 4 differs from row 1: the agent decides.
    assert [decode_record(value).source_id for _, value in publisher.topics[INTAKE]] == [
        "1",
        "4",
        "5",
    ]
    # Only rows whose reference was seen before (and row 1, which they are compared with).
    assert sorted(hashed) == ["REF-1", "REF-1", "REF-1", "REF-2"]


async def test_the_next_batch_is_claimed_while_one_is_published_and_goes_out_after_it() -> None:
    db = FakeDatabase([row(n) for n in range(1, 25)])
    seen: list[str] = []

    class SlowPublisher(FakePublisher):
        async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
            if topic != INTAKE:
                return
            first = messages[0][0]
            seen.append(f"publish {first!r}")
            await asyncio.sleep(0.02)
            await super().publish(topic, messages)
            seen.append(f"published {first!r}")

    claim = FakeConnection.fetch

    async def fetch(self: FakeConnection, query: str, *args: Any) -> list[Record]:
        rows = await claim(self, query, *args)
        if query == staging_table.CLAIM_ROWS:
            seen.append(f"claim {[r['id'] for r in rows][:1]}")
        return rows

    publisher = SlowPublisher()
    FakeConnection.fetch = fetch  # type: ignore[method-assign]
    try:
        assert await poller(db, publisher).drain() == 24
    finally:
        FakeConnection.fetch = claim  # type: ignore[method-assign]
    # Batch 2 is claimed while batch 1 is being published, and published after it.
    assert seen.index("claim [9]") < seen.index("published b'REF-1'")
    assert seen.index("published b'REF-1'") < seen.index("publish b'REF-9'")
    assert publisher.keys(INTAKE) == [f"REF-{n}".encode() for n in range(1, 25)]
    assert db.processed == set(range(1, 25))


async def test_postgres_away_at_the_poller_lock_or_its_release_never_escapes_the_run() -> None:
    # An error escaping the timer stops the worker (seen when Postgres crashed mid-drain).
    db = FakeDatabase([row(1), row(2)])
    publisher = FakePublisher()
    lock = FakeConnection.execute
    release = FakeTransaction.rollback
    refused = ConnectionRefusedError(111, "Connect call failed")

    async def lock_refused(self: FakeConnection, query: str, *args: Any) -> None:
        if query == staging_table.POLLER_LOCK:
            raise refused
        await lock(self, query, *args)

    async def release_refused(self: FakeTransaction) -> None:
        raise refused

    made = poller(db, publisher)
    try:
        FakeConnection.execute = lock_refused  # type: ignore[method-assign]
        assert await made.drain() == 0
        assert db.processed == set()
        FakeConnection.execute = lock  # type: ignore[method-assign]
        FakeTransaction.rollback = release_refused  # type: ignore[method-assign]
        assert await made.drain() == 2
    finally:
        FakeConnection.execute = lock  # type: ignore[method-assign]
        FakeTransaction.rollback = release  # type: ignore[method-assign]
    assert db.processed == {1, 2}


async def test_a_drain_finding_the_lock_taken_claims_nothing() -> None:
    db = FakeDatabase([row(1), row(2)])
    lock = FakeConnection.execute

    async def lock_taken(self: FakeConnection, query: str, *args: Any) -> None:
        if query == staging_table.POLLER_LOCK:
            raise LockNotAvailableError("another drain holds the staging poller lock")
        await lock(self, query, *args)

    try:
        FakeConnection.execute = lock_taken  # type: ignore[method-assign]
        assert await poller(db, FakePublisher()).drain() == 0
    finally:
        FakeConnection.execute = lock  # type: ignore[method-assign]
    assert (db.processed, db.locked) == (set(), set())


async def test_a_drain_whose_lock_postgres_ended_claims_nothing_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Postgres ends the lock's transaction when it sits idle past
    # DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS (a frozen worker): another worker may
    # be the poller by now, so the drain finishes the batch in hand and stops.
    db = FakeDatabase([row(n) for n in range(1, 25)])
    publisher = FakePublisher()
    lock = FakeConnection.execute
    taken = 0

    async def lock_ended(self: FakeConnection, query: str, *args: Any) -> None:
        nonlocal taken
        if query == staging_table.POLLER_LOCK:
            taken += 1
            if taken > 1:
                raise IdleInTransactionSessionTimeoutError("terminating connection")
        await lock(self, query, *args)

    made = poller(db, publisher)
    try:
        FakeConnection.execute = lock_ended  # type: ignore[method-assign]
        assert await made.drain() == 8
    finally:
        FakeConnection.execute = lock  # type: ignore[method-assign]
    assert db.processed == set(range(1, 9))
    assert db.locked == set()
    assert publisher.keys(INTAKE) == [f"REF-{n}".encode() for n in range(1, 9)]
    assert "the poller lock is gone (IdleInTransactionSessionTimeoutError" in caplog.text
    # The next run takes the lock again and moves the rest.
    assert await made.drain() == 16
    assert db.processed == set(range(1, 25))
