"""The fault harness: load through both inputs, one fault, recovery, then the invariants.

A scenario (tests/integration/test_faults.py) stages rows and/or sends signed
webhooks, breaks one thing (a worker, the broker, Postgres, Redis), repairs it,
waits for the pipeline to drain and calls :func:`check_invariants`:

- every reference an input acknowledged (a staged row the ETL committed, a
  webhook answered 2xx) is recorded;
- nothing outside the sent set is recorded;
- payments rows = distinct references among them = ``payment_references`` rows
  = distinct event ids on ``payment.events``, each reference with one event id
  (a repeated event carries the same id);
- ``python -m app reconcile`` exits 0.

Everything random comes from one seed: ``FAULT_SEED`` (default
:data:`DEFAULT_SEED`). Every failure names it, so a failing run can be replayed
with the same load and the same fault points (timing still varies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import redis
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from app.kafka.topics import DLQ, EVENTS_DEFAULT, INTAKE
from tests.pipeline import (
    StagingLoad,
    app_env,
    fetch,
    make_load,
    read_records,
    read_topic,
    reconcile,
    stage,
    wait_consumed,
    wait_drained,
)
from tests.stack import Stack, Worker, run_worker, wait_for
from tests.webhook_client import signed

DEFAULT_SEED = 20261128
WEBHOOK = "/api/v1/payments/webhook"
#: The secret the harness's workers verify and its load signs with.
SECRET = "whsec_" + "ZmF1bHQgaGFybmVzcyB3ZWJob29rIHNlY3JldCE="
ACKNOWLEDGED = frozenset({200, 201, 202})


def fault_seed() -> int:
    return int(os.environ.get("FAULT_SEED", DEFAULT_SEED))


@dataclass
class Ledger:
    """What the harness sent and what each input acknowledged, by reference."""

    seed: int = field(default_factory=fault_seed)
    sent: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 (test data, not secrets)

    def staged(self, rows: list[tuple[Any, ...]], invalid_marker: str = "-BAD-") -> None:
        """Rows the ETL committed to the staging table: the valid ones are acknowledged."""
        references = {row[0] for row in rows}
        self.sent |= references
        self.acknowledged |= {ref for ref in references if invalid_marker not in ref}

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"{message}\n(FAULT_SEED={self.seed} replays this run's load)")

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            raise self.fail(message)


# --- webhook load -----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One webhook request: its reference and what came back (status 0: no answer)."""

    reference: str
    status: int
    retry_after: str | None
    started: float
    ended: float
    body: dict[str, Any]


@dataclass
class WebhookLoad:
    """Signed webhooks from ``senders`` concurrent clients, round robin over ``urls``.

    Each request is a new payment, or (``duplicate_rate``) the same body again
    under a new webhook-id: a sender retrying. References come from the ledger's
    seed; answers are kept in order of completion.
    """

    ledger: Ledger
    urls: list[str]
    prefix: str
    senders: int = 4
    duplicate_rate: float = 0.2
    #: Pause of each sender between two requests (keeps the load steady, not maximal).
    pause: float = 0.02
    timeout: float = 15.0
    answers: list[Answer] = field(default_factory=list)
    _bodies: list[tuple[str, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _next(self) -> tuple[str, bytes]:
        rng = self.ledger.rng
        if self._bodies and rng.random() < self.duplicate_rate:
            return rng.choice(self._bodies)
        return self._new()

    def _new(self) -> tuple[str, bytes]:
        rng = self.ledger.rng
        reference = f"{self.prefix}-W{len(self._bodies):07d}"
        day = datetime.now(UTC) - timedelta(days=rng.randrange(0, 30))
        body = json.dumps(
            {
                "reference_number": reference,
                "loan_account_number": f"LN{rng.randrange(10**6):07d}",
                "cif": f"C{rng.randrange(10**6):07d}",
                "amount": rng.randrange(100, 10**7) / 100,
                "payment_date": day.date().isoformat(),
            }
        ).encode()
        self._bodies.append((reference, body))
        return reference, body

    async def _send(
        self, session: aiohttp.ClientSession, url: str, reference: str, body: bytes
    ) -> Answer:
        """POST one body under a new webhook-id; ledger and answers note the outcome."""
        self.ledger.sent.add(reference)
        headers = {
            "Content-Type": "application/json",
            **signed(SECRET, body, msg_id=f"msg_{uuid.uuid4().hex}"),
        }
        started = time.monotonic()
        status, retry_after, answer = 0, None, {}
        try:
            async with session.post(url + WEBHOOK, data=body, headers=headers) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
                    answer = await response.json()
        except (aiohttp.ClientError, TimeoutError):
            pass  # no answer: not acknowledged, maybe recorded
        result = Answer(reference, status, retry_after, started, time.monotonic(), answer)
        self.answers.append(result)
        if status in ACKNOWLEDGED:
            self.ledger.acknowledged.add(reference)
        return result

    async def _sender(self, number: int, session: aiohttp.ClientSession) -> None:
        url = self.urls[number % len(self.urls)]
        while not self._stop.is_set():
            await self._send(session, url, *self._next())
            await asyncio.sleep(self.pause)

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        return aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=self.senders)
        )

    async def _run(self) -> None:
        async with self._session() as session:
            await asyncio.gather(*(self._sender(n, session) for n in range(self.senders)))

    def warm_up(self, timeout: float = 90) -> None:
        """Send new payments to each URL until it answers 201: its worker decides at once.

        Before that a worker may still be joining the group or recovering its
        table, and answers 202 or 503 for reasons that are not the scenario's.
        """

        async def created(url: str) -> bool:
            async with self._session() as session:
                reference, body = self._new()
                return (await self._send(session, url, reference, body)).status == 201

        for url in self.urls:
            wait_for(
                lambda url=url: asyncio.run(created(url)),
                timeout=timeout,
                interval=1,
                what=f"a 201 from {url}",
            )

    def __enter__(self) -> WebhookLoad:
        """Send, from a thread of its own, until the block ends."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=self.timeout + 10)
        assert not self._thread.is_alive(), "the webhook load did not stop"

    def acknowledged_after(self, moment: float) -> int:
        """New payments (201/202) answered after ``moment``: ingest going on."""
        return sum(1 for a in self.answers if a.ended > moment and a.status in (201, 202))

    def between(self, start: float, end: float) -> list[Answer]:
        """Requests sent after ``start`` and answered before ``end`` (monotonic seconds)."""
        return [a for a in self.answers if a.started >= start and a.ended <= end]


# --- staging load ----------------------------------------------------------------


def stage_load(
    stack: Stack, ledger: Ledger, count: int, prefix: str, **rates: float
) -> StagingLoad:
    """``make_load``'s rows from the ledger's seed, staged at once and in the ledger."""
    load = make_load(count, prefix, seed=ledger.seed, **rates)
    asyncio.run(stage(stack, load.rows))
    ledger.staged(load.rows)
    return load


class StagingFeed:
    """The ETL writing ``rows`` as ``chunks`` COPYs spread over ``seconds``, from a thread.

    A chunk's rows are acknowledged in the ledger once its COPY has committed.
    """

    def __init__(
        self, stack: Stack, ledger: Ledger, rows: list[tuple[Any, ...]], seconds: float, chunks: int
    ) -> None:
        self.stack = stack
        self.ledger = ledger
        self.rows = rows
        self.seconds = seconds
        self.chunks = chunks
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._error: BaseException | None = None

    def _feed(self) -> None:
        size = -(-len(self.rows) // self.chunks)
        try:
            for start in range(0, len(self.rows), size):
                chunk = self.rows[start : start + size]
                asyncio.run(stage(self.stack, chunk))
                self.ledger.staged(chunk)
                time.sleep(self.seconds / self.chunks)
        except BaseException as exc:  # reported by __exit__
            self._error = exc
        finally:
            self.done.set()

    def __enter__(self) -> StagingFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(timeout=self.seconds + 120)
        if self._error is not None:
            raise self._error


# --- workers ----------------------------------------------------------------------


class Fleet:
    """Workers of one run, each with its own folder, WORKER_ID and web port."""

    def __init__(self, stack: Stack, root: Path, count: int, run: str, **env: str) -> None:
        self.stack = stack
        self.root = root
        self.run = run
        self.env = env
        self.workers: list[Worker] = []
        self._settings: list[dict[str, str]] = []
        self._running: list[contextlib.ExitStack] = []
        for _ in range(count):
            self.add()

    def add(self, **env: str) -> Worker:
        """One more worker, with ``env`` on top of the fleet's settings (kept for restarts)."""
        number = len(self.workers)
        (self.root / f"worker-{number}").mkdir(parents=True, exist_ok=True)
        self._settings.append({**self.env, **env})
        self._running.append(contextlib.ExitStack())
        self.workers.append(self._start(number))
        return self.workers[number]

    def _start(self, number: int) -> Worker:
        return self._running[number].enter_context(
            run_worker(
                self.stack,
                self.root / f"worker-{number}",
                WORKER_ID=f"fault-{self.run}-{number}",
                **self._settings[number],
            )
        )

    def kill(self, number: int) -> None:
        """SIGKILL worker ``number`` (its fronts follow it within a second)."""
        worker = self.workers[number]
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        self._running[number].close()

    def start(self, number: int) -> Worker:
        """Start worker ``number`` again, with the same id, settings and data folder."""
        self.workers[number] = self._start(number)
        return self.workers[number]

    def signal(self, signum: int) -> None:
        """Send ``signum`` to every worker (SIGSTOP / SIGCONT: freeze and thaw the fleet)."""
        for worker in self.workers:
            worker.process.send_signal(signum)

    def alive(self) -> None:
        for worker in self.workers:
            worker.assert_alive()

    def close(self) -> None:
        for running in self._running:
            running.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.signal(signal.SIGCONT)  # a stopped process ignores the SIGTERM that ends it
        self.close()


def warm_up(worker: Worker, ledger: Ledger) -> None:
    """Wait until ``worker`` answers a new payment 201 (its sends count in the ledger)."""
    worker.wait_web()
    WebhookLoad(ledger, [worker.base_url], f"WARM-{uuid.uuid4().hex[:8]}").warm_up()


def is_stopped(worker: Worker) -> bool:
    """True while the worker's process is stopped (SIGSTOP): state T in /proc."""
    stat = Path(f"/proc/{worker.process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


#: The staging poller's advisory lock, as pg_locks shows a bigint key (two halves).
POLLER_LOCK_HELD = """
SELECT count(*) AS n FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND ((classid::bigint << 32) | objid::bigint)
      = hashtext('payment_service.staging poller')::bigint
"""


def freeze_holding_the_poller_lock(stack: Stack, worker: Worker) -> bool:
    """SIGSTOP ``worker`` while a drain of its holds the poller lock; False to try again.

    ``worker`` must be the only poller running. Its drain may end between the look
    and the signal: then it is thawed and False says so.
    """
    if not fetch(stack, POLLER_LOCK_HELD)[0]["n"]:
        return False
    worker.process.send_signal(signal.SIGSTOP)
    wait_for(lambda: is_stopped(worker), timeout=10, what="the worker to stop")
    if fetch(stack, POLLER_LOCK_HELD)[0]["n"]:
        return True
    worker.process.send_signal(signal.SIGCONT)
    return False


# --- faults in the stack ----------------------------------------------------------


def crash(stack: Stack, service: str) -> None:
    """SIGKILL kafka or redis; ``pg_ctl stop -m immediate`` for postgres."""
    stack.script("crash", service)


def restart(stack: Stack, service: str) -> None:
    stack.script("up", service, timeout=300)


def stack_redis(stack: Stack) -> redis.Redis:
    """A plain client of the stack's Redis (for FLUSHALL)."""
    return redis.Redis(host=stack.redis_host, port=stack.redis_port, socket_timeout=5)


@contextlib.contextmanager
def paused(stack: Stack, service: str) -> Iterator[None]:
    """kafka or redis stopped with SIGSTOP for the block, then SIGCONT (also on failure)."""
    stack.script("pause", service)
    try:
        yield
    finally:
        stack.script("resume", service)


@contextlib.contextmanager
def restored(stack: Stack) -> Iterator[None]:
    """Whatever a scenario broke, the stack is whole again for the next test."""
    try:
        yield
    finally:
        for service in ("kafka", "redis"):
            stack.script("resume", service, check=False)
        stack.script("up", timeout=300)


# --- the intake's offsets ---------------------------------------------------------


async def committed_offsets(stack: Stack, run: str) -> dict[int, int]:
    """The run's consumer group's committed intake offset per partition (absent: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(app_env(run)["KAFKA_CLIENT_ID"])
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == INTAKE}


def intake_keys_below(stack: Stack, offsets: dict[int, int]) -> list[tuple[int, int, str]]:
    """(partition, offset, reference) of every intake record below ``offsets``."""
    records = asyncio.run(read_records(stack, INTAKE, until=offsets))
    return [(m.partition, m.offset, m.key.decode()) for m in records if m.key is not None]


# --- settling and checking --------------------------------------------------------


def settle(
    stack: Stack, run: str, ledger: Ledger, fleet: Fleet | None = None, wait: float = 300
) -> None:
    """Wait until staging is read, every acknowledged payment recorded, the outbox sent and
    every intake record decided (the group's offsets at the topic's end)."""
    alive = None if fleet is None else fleet.alive
    asyncio.run(wait_drained(stack, len(ledger.acknowledged), wait_seconds=wait, alive=alive))
    asyncio.run(wait_consumed(stack, run, wait_seconds=wait))


@dataclass(frozen=True)
class Figures:
    rows: int
    references: int
    events: int
    distinct_events: int

    @property
    def repeated_events(self) -> int:
        return self.events - self.distinct_events


def events_by_reference(stack: Stack) -> tuple[int, dict[str, set[str]]]:
    """How many events payment.events holds, and the event ids of each reference."""
    messages = asyncio.run(read_topic(stack, EVENTS_DEFAULT))
    ids: dict[str, set[str]] = defaultdict(set)
    for _, value in messages:
        event = json.loads(value)
        ids[event["payment"]["reference_number"]].add(event["event_id"])
    return len(messages), ids


def recorded_references(stack: Stack) -> set[str]:
    rows = fetch(stack, "SELECT reference_number FROM payment_service.payments")
    return {row["reference_number"] for row in rows}


def check_invariants(
    stack: Stack, run: str, ledger: Ledger, payments: int | None = None
) -> Figures:
    """The module doc's checks, each failure naming what broke and the seed; with
    ``payments``, also that exactly that many are recorded."""
    rows = fetch(stack, "SELECT reference_number FROM payment_service.payments")
    references = fetch(stack, "SELECT count(*) AS n FROM payment_service.payment_references")[0]
    recorded_refs = [row["reference_number"] for row in rows]
    distinct = set(recorded_refs)
    missing = ledger.acknowledged - distinct
    ledger.check(
        not missing,
        f"{len(missing)} acknowledged references not recorded, e.g. {sorted(missing)[:5]}",
    )
    foreign = distinct - ledger.sent
    ledger.check(
        not foreign, f"{len(foreign)} recorded references never sent: {sorted(foreign)[:5]}"
    )
    ledger.check(
        len(recorded_refs) == len(distinct),
        f"{len(recorded_refs) - len(distinct)} references recorded twice",
    )
    ledger.check(
        references["n"] == len(distinct),
        f"payment_references has {references['n']} rows for {len(distinct)} payments",
    )
    count, ids = events_by_reference(stack)
    two_ids = {ref: sorted(found) for ref, found in ids.items() if len(found) > 1}
    ledger.check(not two_ids, f"references with two event ids: {dict(list(two_ids.items())[:3])}")
    ledger.check(
        set(ids) == distinct,
        f"events without rows: {sorted(set(ids) - distinct)[:5]}; "
        f"rows without events: {sorted(distinct - set(ids))[:5]}",
    )
    code, report = reconcile(stack, run)
    ledger.check(code == 0, f"reconcile failed: {report}")
    figures = Figures(len(recorded_refs), references["n"], count, len(ids))
    ledger.check(payments in (None, figures.rows), f"{figures} for {payments} payments")
    return figures


def wait_rows(stack: Stack, at_least: int, fleet: Fleet, timeout: float = 300) -> int:
    """Wait until ``at_least`` payments are recorded; the count then."""

    def reached() -> int:
        fleet.alive()
        rows = fetch(stack, "SELECT count(*) AS n FROM payment_service.payments")[0]["n"]
        return int(rows) if rows >= at_least else 0

    return int(wait_for(reached, timeout=timeout, interval=0.2, what=f"{at_least} payments"))


# --- hostile data -----------------------------------------------------------------

#: Past any retention window the service may keep (PARTITION_RETENTION_MONTHS ≤ 24 in tests).
LONG_AGO = timedelta(days=3 * 365)
#: A date that overflows when converted to UTC.
OVERFLOWING_DATE = "0001-01-01T00:00:00+14:00"
ZERO_WIDTH_SPACE = "\u200b"


@dataclass(frozen=True)
class Hostile:
    """One bad input: through which door, what it carries, and what must come of it.

    ``expect`` is the dead letter's reason (staging, intake) or the HTTP status
    class (webhook: "4xx"). ``key`` finds its dead letter (the intake key or the
    staging reference).
    """

    name: str
    door: str  # "webhook", "staging", "intake" (a producer) or "console" (kafka-console-producer)
    key: str
    expect: str
    payload: Any


def _nested(depth: int) -> Any:
    value: Any = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


def hostile_inputs(prefix: str, ledger: Ledger) -> list[Hostile]:
    """Every class of bad data of issue 16, through every door it can pass, seeded order."""
    now = datetime.now(UTC).replace(microsecond=0)
    old = (now - LONG_AGO).replace(tzinfo=None)
    yesterday = (now - timedelta(days=1)).replace(tzinfo=None)

    def body(ref: str, **fields: Any) -> dict[str, Any]:
        return {
            "reference_number": ref,
            "loan_account_number": "LN-HOSTILE",
            "cif": "C-HOSTILE",
            "amount": "15.00",
            "payment_date": yesterday.date().isoformat(),
            **fields,
        }

    def row(ref: str, **fields: Any) -> tuple[Any, ...]:
        values = {
            "amount": Decimal("15.00"),
            "payment_date": yesterday,
            "metadata": "{}",
            **fields,
        }
        return (
            ref,
            "LN-HOSTILE",
            "C-HOSTILE",
            values["amount"],
            values["payment_date"],
            "bank_transfer",
            values["metadata"],
        )

    def record(ref: str, **fields: Any) -> bytes:
        value = {
            **body(ref),
            "payment_date": yesterday.isoformat() + "Z",
            "source": "webhook",
            "source_id": f"raw-{ref}",
            "received_at": now.isoformat(),
            "metadata": {},
            **fields,
        }
        return json.dumps(value).encode()

    p = f"{prefix}-BAD"
    big = {"blob": "x" * (2 * 1024 * 1024)}
    inputs = [
        # webhooks: refused at the door, never a 500, never a 2xx
        Hostile("overflowing date", "webhook", f"{p}-W1", "4xx",
                body(f"{p}-W1", payment_date=OVERFLOWING_DATE)),
        Hostile("beyond retention", "webhook", f"{p}-W2", "4xx",
                body(f"{p}-W2", payment_date=old.date().isoformat())),
        Hostile("zero-width reference", "webhook", f"{p}-W3{ZERO_WIDTH_SPACE}", "4xx",
                body(f"{p}-W3{ZERO_WIDTH_SPACE}")),
        Hostile("full-width digits", "webhook", f"{p}-W4", "4xx",
                body(f"{p}-W4", amount="\uff11\uff15\uff10\uff10")),
        Hostile("underscored amount", "webhook", f"{p}-W5", "4xx",
                body(f"{p}-W5", amount="1_000")),
        Hostile("deep metadata", "webhook", f"{p}-W6", "4xx",
                body(f"{p}-W6", metadata=_nested(40))),
        Hostile("200 kB metadata", "webhook", f"{p}-W7", "4xx",
                body(f"{p}-W7", metadata={"blob": "x" * 200_000})),
        # staging rows: dead-lettered (cut down if needed) and marked processed
        Hostile("2 MB metadata", "staging", f"{p}-S1", "invalid",
                row(f"{p}-S1", metadata=json.dumps(big))),
        Hostile("deep metadata", "staging", f"{p}-S2", "invalid",
                row(f"{p}-S2", metadata='{"n": ' * 2000 + "1" + "}" * 2000)),
        Hostile("beyond retention", "staging", f"{p}-S3", "beyond_retention",
                row(f"{p}-S3", payment_date=old)),
        Hostile("zero-width reference", "staging", f"{p}-S4{ZERO_WIDTH_SPACE}", "invalid",
                row(f"{p}-S4{ZERO_WIDTH_SPACE}")),
        # raw intake records: dead-lettered with their reason, the partition goes on
        Hostile("not JSON, not UTF-8", "intake", f"{p}-I1", "undecodable", b"\xff" * 600_000),
        Hostile("overflowing date", "intake", f"{p}-I2", "invalid",
                record(f"{p}-I2", payment_date=OVERFLOWING_DATE)),
        Hostile("beyond retention", "intake", f"{p}-I3", "beyond_retention",
                record(f"{p}-I3", payment_date=old.isoformat() + "Z")),
        Hostile("zero-width reference", "intake", f"{p}-I4{ZERO_WIDTH_SPACE}", "invalid",
                record(f"{p}-I4{ZERO_WIDTH_SPACE}")),
        Hostile("deep JSON", "intake", f"{p}-I5", "undecodable",
                b'{"metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        Hostile("full-width digits", "intake", f"{p}-I6", "invalid",
                record(f"{p}-I6", amount="\uff11\uff15\uff10\uff10")),
        # a line an operator (or a broken tool) typed into Kafka's own console producer
        Hostile("a line of text", "console", f"{p}-C1", "undecodable", "this is not a payment"),
        Hostile("an empty JSON object", "console", f"{p}-C2", "invalid", "{}"),
    ]  # fmt: skip
    ledger.rng.shuffle(inputs)
    ledger.sent |= {hostile.key for hostile in inputs}
    return inputs


def _good_raw_record(reference: str) -> bytes:
    now = datetime.now(UTC).replace(microsecond=0)
    return json.dumps(
        {
            "reference_number": reference,
            "loan_account_number": "LN-BEHIND",
            "cif": "C-BEHIND",
            "amount": "21.00",
            "payment_date": (now - timedelta(days=2)).isoformat(),
            "source": "webhook",
            "source_id": f"raw-{reference}",
            "received_at": now.isoformat(),
        }
    ).encode()


async def _send_hostile(
    stack: Stack, urls: list[str], inputs: list[Hostile], ledger: Ledger
) -> dict[str, int]:
    """Put every input in through its door; behind each raw intake record, a good one on
    the same partition. Returns each hostile webhook's status (0: no answer)."""
    statuses: dict[str, int] = {}
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.kafka_bootstrap, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for number, hostile in enumerate(inputs):
                if hostile.door == "webhook":
                    raw = json.dumps(hostile.payload).encode()
                    headers = {
                        "Content-Type": "application/json",
                        **signed(SECRET, raw, msg_id=f"msg_{uuid.uuid4().hex}"),
                    }
                    url = urls[number % len(urls)] + WEBHOOK
                    try:
                        async with session.post(url, data=raw, headers=headers) as response:
                            statuses[hostile.key] = response.status
                    except (aiohttp.ClientError, TimeoutError):
                        statuses[hostile.key] = 0
                elif hostile.door == "staging":
                    await stage(stack, [hostile.payload])
                elif hostile.door == "console":
                    console_produce(stack, hostile.key, hostile.payload)
                else:
                    sent = await producer.send_and_wait(
                        INTAKE, hostile.payload, key=hostile.key.encode()
                    )
                    behind = f"{hostile.key}-BEHIND".replace("-BAD-", "-OK-")
                    behind = behind.replace(ZERO_WIDTH_SPACE, "")
                    ledger.sent.add(behind)
                    await producer.send_and_wait(
                        INTAKE,
                        _good_raw_record(behind),
                        key=behind.encode(),
                        partition=sent.partition,
                    )
                    ledger.acknowledged.add(behind)
    finally:
        await producer.stop()
    return statuses


def console_produce(stack: Stack, key: str, line: str) -> None:
    """One keyed record onto payment.intake through Kafka's own kafka-console-producer."""
    result = stack.tool(
        "kafka-console-producer",
        "--bootstrap-server",
        stack.kafka_bootstrap,
        "--topic",
        INTAKE,
        "--property",
        "parse.key=true",
        "--property",
        "key.separator=\t",
        input=f"{key}\t{line}\n",
    )
    assert result.returncode == 0, result.stderr


def send_hostile(
    stack: Stack, urls: list[str], inputs: list[Hostile], ledger: Ledger
) -> dict[str, int]:
    return asyncio.run(_send_hostile(stack, urls, inputs, ledger))


def dead_letter_reasons(stack: Stack) -> dict[str, set[str]]:
    """The reasons of the dead letters on the DLQ, by reference (or intake key)."""
    reasons: dict[str, set[str]] = defaultdict(set)
    for key, value in asyncio.run(read_topic(stack, DLQ)):
        letter = json.loads(value)
        reference = letter.get("reference_number") or (key or b"").decode(errors="replace")
        reasons[reference].add(letter["reason"])
    return reasons


def check_hostile(
    stack: Stack, ledger: Ledger, inputs: list[Hostile], statuses: dict[str, int]
) -> None:
    """Each bad input refused at the door (4xx) or dead-lettered with its reason, none
    recorded, every bad staging row marked processed."""
    reasons = dead_letter_reasons(stack)
    recorded = recorded_references(stack)
    processed = {
        row["reference_number"]: row["processed"]
        for row in fetch(
            stack,
            "SELECT reference_number, processed FROM public.payment_staging"
            " WHERE reference_number = ANY($1::text[])",
            [hostile.key for hostile in inputs if hostile.door == "staging"],
        )
    }
    wrong = []
    for hostile in inputs:
        what = f"{hostile.name} through the {hostile.door}"
        if hostile.door == "webhook":
            status = statuses.get(hostile.key)
            if status is None or not 400 <= status < 500:
                wrong.append(f"{what}: answered {status}, expected a 4xx")
        elif hostile.expect not in reasons.get(hostile.key, set()):
            wrong.append(
                f"{what}: dead letters {sorted(reasons.get(hostile.key, set()))},"
                f" expected {hostile.expect!r}"
            )
        if hostile.door == "staging" and processed.get(hostile.key) is not True:
            wrong.append(f"{what}: staging row not marked processed")
        if hostile.key in recorded:
            wrong.append(f"{what}: recorded")
    ledger.check(not wrong, "hostile data mishandled:\n  " + "\n  ".join(wrong))
