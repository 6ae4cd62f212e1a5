"""Driving the recording pipeline in tests and benchmarks: fresh topics, staged loads, drains.

Each run gets its own Faust app id (so its own consumer group and table changelog)
and recreated ``payment.intake``/``payment.events``/DLQ topics, with the payment
tables emptied: ``reconcile`` then compares exactly this run's rows and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from prometheus_client.parser import text_string_to_metric_families

from app.intake.staging import ROW_COLUMNS
from app.kafka.topics import DLQ, EVENTS_DEFAULT, INTAKE
from tests.stack import ROOT, Stack, Worker, read_topics_conf, wait_for

#: What the ETL writes: the poller's columns without the generated id.
STAGING_COLUMNS = ROW_COLUMNS[1:]

EMPTY_TABLES = """
TRUNCATE public.payment_staging, payment_service.payments, payment_service.payment_references,
         payment_service.outbox, payment_service.staging_process_log,
         payment_service.webhook_request_counts, payment_service.reference_retention
"""

#: A drain that records nothing new for this long is stuck, not slow.
STALL_SECONDS = 120.0

DRAIN_FIGURES = """
SELECT (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS backlog,
       (SELECT count(*) FROM payment_service.payments) AS rows,
       (SELECT coalesce(sum(cardinality(event_ids)), 0) FROM payment_service.outbox) AS unsent
"""


def run_id() -> str:
    """A short id naming one run's app (consumer group, changelog) and references."""
    return uuid.uuid4().hex[:10]


def app_env(run: str, **extra: str) -> dict[str, str]:
    """Worker settings for one run: its own app id, and fast timers."""
    env = {
        "KAFKA_CLIENT_ID": f"payments-{run}",
        "STAGING_INTERVAL_SECONDS": "1",
        "OUTBOX_RELAY_INTERVAL_SECONDS": "2",
        "OUTBOX_RELAY_MIN_AGE_SECONDS": "5",
        "DB_POOL_MIN": "2",
        "DB_POOL_MAX": "10",
    }
    env.update(extra)
    return env


async def _recreate_topics(stack: Stack) -> None:
    wanted = {
        name: spec
        for name, spec in read_topics_conf().items()
        if name in (INTAKE, DLQ, EVENTS_DEFAULT)
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(UnknownTopicOrPartitionError):
            await admin.delete_topics(list(wanted))
        deadline = time.monotonic() + 60
        pending = dict(wanted)
        while pending:
            for name, (partitions, config) in list(pending.items()):
                try:
                    await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
                    del pending[name]
                except TopicAlreadyExistsError:
                    # Deletion is asynchronous in the broker: wait for it to finish.
                    if time.monotonic() > deadline:
                        raise
            if pending:
                await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def fresh_pipeline(stack: Stack) -> None:
    """Empty the payment tables and recreate the service's three topics."""
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        await connection.execute(EMPTY_TABLES)
    finally:
        await connection.close()
    await _recreate_topics(stack)


# --- staged loads -------------------------------------------------------------


@dataclass
class StagingLoad:
    """Rows to stage, and what recording them must come to."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    created: int = 0
    duplicates: int = 0
    conflicts: int = 0
    invalid: int = 0


def _invalid_row(rng: random.Random, reference: str, now: datetime) -> tuple[Any, ...]:
    kind = rng.randrange(5)
    amount, payment_date, metadata = Decimal("10.00"), now - timedelta(days=1), "{}"
    if kind == 0:
        amount = Decimal("-5.00")
    elif kind == 1:
        amount = Decimal("0.00")
    elif kind == 2:
        payment_date = datetime(1999, 12, 31)  # noqa: DTZ001 (staging is naive UTC)
    elif kind == 3:
        payment_date = now + timedelta(days=30)
    else:
        metadata = "[1, 2, 3]"
    return (reference, "LA-INVALID", "CIF-INVALID", amount, payment_date, "bank", metadata)


def make_load(
    count: int,
    prefix: str,
    *,
    duplicate_rate: float = 0.10,
    conflict_rate: float = 0.02,
    invalid_rate: float = 0.02,
    seed: int = 7,
) -> StagingLoad:
    """``count`` staging rows: unique payments plus exact duplicates, conflicts and invalid rows.

    Duplicates and conflicts copy different originals, and a conflict always comes
    after its original, so the expected counts are exact whatever the batching.
    """
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    duplicates = int(count * duplicate_rate)
    conflicts = int(count * conflict_rate)
    invalid = int(count * invalid_rate)
    unique = count - duplicates - conflicts - invalid
    base = [
        (
            f"{prefix}-{number:08d}",
            f"LA{number % 997:06d}",
            f"CIF{number % 991:06d}",
            Decimal(rng.randrange(100, 10_000_000)) / 100,
            now - timedelta(days=rng.randrange(0, 60), seconds=rng.randrange(86400)),
            rng.choice(["bank_transfer", "card", "cash", None]),
            json.dumps({"batch": prefix, "n": number}),
        )
        for number in range(unique)
    ]
    originals = rng.sample(range(unique), duplicates + conflicts)
    rows = list(base)
    rows += [base[i] for i in originals[:duplicates]]
    conflict_rows = []
    for i in originals[duplicates:]:
        original = base[i]
        conflict_rows.append((*original[:3], original[3] + 1, *original[4:]))
    rows += conflict_rows
    rows += [_invalid_row(rng, f"{prefix}-BAD-{n:06d}", now) for n in range(invalid)]
    rng.shuffle(rows)
    # A conflict before its original would turn the original into the conflict
    # (and its duplicates with it): swap such pairs.
    position = {}
    for index, row in enumerate(rows):
        position.setdefault((row[0], row[3]), index)
    for i in originals[duplicates:]:
        original = base[i]
        first = position[(original[0], original[3])]
        later = position[(original[0], original[3] + 1)]
        if later < first:
            rows[first], rows[later] = rows[later], rows[first]
    return StagingLoad(rows, unique, duplicates, conflicts, invalid)


async def stage(stack: Stack, rows: list[tuple[Any, ...]]) -> None:
    """COPY rows into payment_staging (the ETL's side)."""
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        await connection.copy_records_to_table(
            "payment_staging", schema_name="public", columns=STAGING_COLUMNS, records=rows
        )
    finally:
        await connection.close()


async def drain_figures(stack: Stack) -> dict[str, int]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        row = await connection.fetchrow(DRAIN_FIGURES)
    finally:
        await connection.close()
    return dict(row)


INTEGRITY = """
SELECT (SELECT count(*) FROM payment_service.payments) AS rows,
       (SELECT count(DISTINCT reference_number) FROM payment_service.payments) AS distinct_refs,
       (SELECT count(*) FROM payment_service.payment_references) AS refs,
       (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS unprocessed
"""


async def integrity(stack: Stack) -> dict[str, int]:
    """Rows, distinct references among them, references, and unprocessed staging rows."""
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        return dict(await connection.fetchrow(INTEGRITY))
    finally:
        await connection.close()


def assert_recorded_once(stack: Stack, run: str, created: int) -> None:
    """``created`` payments, each once, no staging row left, and ``reconcile`` exits 0."""
    figures = asyncio.run(integrity(stack))
    expected = {"rows": created, "distinct_refs": created, "refs": created, "unprocessed": 0}
    assert figures == expected, figures
    code, report = reconcile(stack, run)
    assert code == 0, report


async def wait_drained(
    stack: Stack,
    expected_rows: int,
    wait_seconds: float,
    alive: Callable[[], None] | None = None,
    settle_seconds: float = 0.0,
    interval: float = 0.25,
) -> dict[str, int]:
    """Wait until the backlog is empty, ``expected_rows`` payments exist and the outbox is sent."""
    deadline = time.monotonic() + wait_seconds
    figures: dict[str, int] = {}
    progress = (-1, time.monotonic())
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        figures = await drain_figures(stack)
        if figures["rows"] != progress[0]:
            progress = (figures["rows"], time.monotonic())
        elif time.monotonic() - progress[1] > STALL_SECONDS:
            raise AssertionError(f"no new rows for {STALL_SECONDS:.0f} s: {figures}")
        if figures["backlog"] == 0 and figures["rows"] >= expected_rows and figures["unsent"] == 0:
            if settle_seconds:
                await asyncio.sleep(settle_seconds)
                figures = await drain_figures(stack)
            return figures
        await asyncio.sleep(interval)
    raise AssertionError(f"pipeline not drained within {wait_seconds:.0f} s: {figures}")


class IntakeLag:
    """How far a run's consumer group is behind the intake topic, partition by partition."""

    def __init__(self, stack: Stack, run: str) -> None:
        self.group = app_env(run)["KAFKA_CLIENT_ID"]
        self.admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None)
        self.partitions: list[TopicPartition] = []

    async def __aenter__(self) -> IntakeLag:
        await self.admin.start()
        await self.consumer.start()
        self.consumer._client.add_topic(INTAKE)
        await self.consumer._client.force_metadata_update()
        self.partitions = [
            TopicPartition(INTAKE, p) for p in self.consumer.partitions_for_topic(INTAKE) or ()
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def behind(self) -> dict[int, tuple[int, int]]:
        """Partition -> (committed offset, end offset), for each partition not at its end."""
        ends = await self.consumer.end_offsets(self.partitions)
        committed = await self.admin.list_consumer_group_offsets(
            self.group, partitions=self.partitions
        )
        done = {
            tp: max(committed[tp].offset, 0) if tp in committed else 0 for tp in self.partitions
        }
        return {tp.partition: (done[tp], ends[tp]) for tp in self.partitions if ends[tp] > done[tp]}


async def wait_consumed(stack: Stack, run: str, wait_seconds: float = 60) -> None:
    """Wait until the run's consumer group has committed the intake topic's end offsets.

    The agent commits a batch's offsets only after its rows, events and dead
    letters are done, so this means "everything on the intake topic is decided".
    """
    async with IntakeLag(stack, run) as lag:
        deadline = time.monotonic() + wait_seconds
        behind: dict[int, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            behind = await lag.behind()
            if not behind:
                return
            await asyncio.sleep(0.5)
    raise AssertionError(
        f"intake not consumed within {wait_seconds:.0f} s; partition: (committed, end) {behind}"
    )


def stall_report(stack: Stack, run: str, workers: list[Worker]) -> str:
    """What a failed drain needs explained: the intake's lag and the workers' warnings.

    Tells a stall (records left on the topic, a partition not committed to its end)
    from records dead-lettered or lost (every offset committed, payments missing),
    and shows what the consumers said about seeks, repairs and rebalances.
    """

    async def figures() -> list[str]:
        async with IntakeLag(stack, run) as lag:
            behind = await lag.behind()
        return [
            f"intake partitions behind, partition: (committed, end): {behind}",
            f"dead letters: {await topic_size(stack, DLQ)}; tables: {await integrity(stack)}",
        ]

    lines = asyncio.run(figures())
    for number, worker in enumerate(workers, 1):
        try:
            records = worker.log_records()
        except AssertionError:  # a line that is not JSON: show the raw end instead
            lines += [f"worker {number} ({worker.log_path}), its log's end:", worker.log()[-4000:]]
            continue
        said = [
            f"  {record.get('time', '')} {record.get('level')} {record.get('message')}"
            for record in records
            if record.get("level") in ("WARNING", "ERROR", "CRITICAL")
            or "Seek stream partitions" in str(record.get("message"))
            or "committed offsets" in str(record.get("message"))
        ]
        lines.append(f"worker {number} ({worker.log_path}), last warnings of {len(said)}:")
        lines += said[-40:]
    return "\n".join(lines)


# --- reading topics -------------------------------------------------------------


async def read_records(
    stack: Stack, topic: str, until: dict[int, int] | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its current end (or, per partition, below ``until``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        if until is not None:
            ends = {tp: min(end, until.get(tp.partition, 0)) for tp, end in ends.items()}
        records: list[ConsumerRecord[bytes, bytes]] = []
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, batch in batches.items():
                records += [m for m in batch if m.offset < ends[tp]]
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()


async def read_topic(stack: Stack, topic: str) -> list[tuple[bytes | None, bytes]]:
    """Every message of ``topic`` up to its current end, as (key, value)."""
    return [(m.key, m.value) for m in await read_records(stack, topic)]


async def topic_size(stack: Stack, topic: str) -> int:
    """How many records ``topic`` holds (the sum of its partitions' end offsets)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


def reconcile(stack: Stack, run: str) -> tuple[int, dict[str, Any]]:
    """Run ``python -m app reconcile``; its exit code and the figures it printed."""
    process = command(stack, run, "reconcile")
    figures: dict[str, Any] = {}
    for line in process.stdout.splitlines():
        if line.startswith("{"):
            figures = json.loads(line)
    return process.returncode, figures


# --- operator commands and queries --------------------------------------------


def command(stack: Stack, run: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m app <args>`` with the run's environment; stdout is the answer."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=stack.service_env(**app_env(run, LOG_LEVEL="warning", **env)),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )


def ok(process: subprocess.CompletedProcess[str]) -> str:
    """The command's stdout, once it is known to have succeeded."""
    assert process.returncode == 0, process.stdout + process.stderr
    return process.stdout


async def _fetch(stack: Stack, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def fetch(stack: Stack, query: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query on the stack's database."""
    return asyncio.run(_fetch(stack, query, *args))


#: /metrics as (name, labels) → value.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(worker: Worker) -> Samples:
    """GET /metrics on the worker's own port (its fronts' counts summed in)."""
    status, text = worker.get("/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How far one series moved between two readings (0 where it did not exist)."""
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


def wait_quiet(worker: Worker) -> Samples:
    """Warm-up notices answered 202 may still be decided: wait until no decision moves.

    Returns the last reading, a baseline from a quiet pipeline.
    """
    last: Samples = {}

    def quiet() -> bool:
        nonlocal last
        now, last = last, samples(worker)
        decided = [key for key in last if key[0] == "payments_decisions_total"]
        return bool(now) and all(now.get(key) == last[key] for key in decided)

    wait_for(quiet, timeout=30, interval=2, what="no decisions for two seconds")
    return last
