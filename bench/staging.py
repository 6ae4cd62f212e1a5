"""The staging benchmark: N rows staged → recorded with events, beside a COPY ceiling and peers.

Run it with ``bench/staging`` (which brings its own stack up). It prints:
- the ceiling: one asyncpg COPY of the same rows into payment_references and
  payments (no validation, no Kafka, no outbox) — the fastest these rows can land;
- for each run, one window from the first staging claim to the moment every row is
  recorded and every event acknowledged (the events topic holds N, the outbox is empty):
  rows/s, and the CPU the bench stack's own processes spent in that same window
  (``bench/meter.py``: the pipeline's processes, Postgres with its reaped backends,
  the broker, Redis), per row;
- with ``--peers``, the same job done by the peers of ``bench/peers/`` on the same stack,
  interleaved with the project round by round, then medians and ratios.

Every run ends with a check: payments rows = references = distinct event ids = N, each
payment id and event id the uuid5 of its reference; a run that fails it stops the bench.
The workers run with the service's defaults except STAGING_INTERVAL_SECONDS=1 (the first
tick comes sooner; the window starts at the first claim and the poller drains the backlog
in one tick) and whatever ``--set NAME=VALUE`` says; the effective settings are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.kafka.topics import EVENTS_DEFAULT
from app.models import EVENT_ID_NAMESPACE, fingerprint_of, payment_id_for
from app.recording.payment_store import PAYMENT_COLUMNS
from app.settings import Settings
from bench import targets
from bench.meter import Meter, stack_pids
from tests.pipeline import STALL_SECONDS, fresh_pipeline, make_load, read_records, run_id, stage
from tests.stack import ROOT, Stack, native_stack, native_stack_env, run_worker

EMPTY_PAYMENTS = "TRUNCATE payment_service.payments, payment_service.payment_references"

#: Whether a run may be done, cheaply (the bench's own queries count as Postgres CPU too:
#: a count(*) of the payments every tenth of a second would be most of it), and the window's
#: two ends by the database clock (epoch seconds): the first staging claim (whoever claimed
#: it logs its batch with started_at) and now.
PROGRESS = """
SELECT NOT EXISTS (SELECT 1 FROM public.payment_staging WHERE NOT processed)
       AND NOT EXISTS (SELECT 1 FROM payment_service.outbox) AS settled,
       (SELECT extract(epoch FROM min(started_at)) FROM payment_service.staging_process_log)
         AS first_claim,
       extract(epoch FROM clock_timestamp()) AS now
"""

COUNTS = """
SELECT (SELECT count(*) FROM payment_service.payments) AS rows,
       (SELECT count(DISTINCT reference_number) FROM payment_service.payments) AS distinct_rows,
       (SELECT count(*) FROM payment_service.payment_references) AS refs,
       (SELECT count(*) FROM payment_service.payments p
          JOIN payment_service.payment_references r USING (reference_number)
         WHERE p.id = r.payment_id) AS matching_ids,
       (SELECT count(*) FROM public.payment_staging WHERE NOT processed) AS unprocessed
"""

#: The service settings printed with the result.
SHOWN_SETTINGS = (
    "staging_batch_size",
    "staging_interval_seconds",
    "staging_helper_processes",
    "record_batch_size",
    "record_batch_window_ms",
    "table_standby_replicas",
    "db_pool_min",
    "db_pool_max",
    "log_level",
)

PEERS = ("plain", "quix")
PEER_PYTHON = {
    "plain": ROOT / ".venv" / "bin" / "python",
    "quix": ROOT / ".venv-peers" / "bin" / "python",
}
PEER_CONSUMER = {"plain": "bench.peers.plain_consumer", "quix": "bench.peers.quix_consumer"}


@dataclass(frozen=True)
class Implementation:
    """One contender: the project with N workers, or a peer with a poller and N consumers."""

    kind: str  # "project" or one of PEERS
    processes: int

    def __str__(self) -> str:
        if self.kind == "project":
            return f"project, {self.processes} worker{'s' * (self.processes > 1)}"
        return f"{self.kind} peer, poller + {self.processes}"


@dataclass
class Result:
    implementation: Implementation
    round: int
    seconds: float
    rows: int
    cpu: dict[str, float] = field(default_factory=dict)
    peak_mib: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    def per_row_us(self, role: str) -> float:
        return self.cpu.get(role, 0.0) / self.rows * 1e6


async def copy_ceiling(stack: Stack, rows: list[tuple[Any, ...]]) -> float:
    """Seconds for one COPY of ``rows`` into payment_references and payments (then emptied).

    The ids and fingerprints are computed before the clock starts: the ceiling is
    the database's part alone.
    """
    references = []
    payments = []
    for reference, account, cif, amount, payment_date, channel, metadata in rows:
        payment_id = payment_id_for(reference)
        defining = {
            "reference_number": reference,
            "loan_account_number": account,
            "cif": cif,
            "amount": f"{amount:.2f}",
            "payment_date": payment_date.isoformat(),
            "payment_channel": channel or "",
        }
        references.append((reference, payment_id, payment_date, fingerprint_of(defining)))
        payments.append(
            (
                payment_id,
                reference,
                account,
                cif,
                amount,
                payment_date,
                channel,
                "staging",
                metadata,
                None,  # currency: staging rows have none
            )
        )
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        started = time.perf_counter()
        async with connection.transaction():
            await connection.copy_records_to_table(
                "payment_references",
                schema_name="payment_service",
                columns=("reference_number", "payment_id", "payment_date", "fingerprint"),
                records=references,
            )
            await connection.copy_records_to_table(
                "payments",
                schema_name="payment_service",
                columns=PAYMENT_COLUMNS,
                records=payments,
            )
        elapsed = time.perf_counter() - started
        await connection.execute(EMPTY_PAYMENTS)
        return elapsed
    finally:
        await connection.close()


def peak_rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --- one run ---------------------------------------------------------------------


async def _events_written(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> int:
    return sum((await consumer.end_offsets(partitions)).values())


async def wait_done(stack: Stack, expected: int, alive: Callable[[], None]) -> tuple[float, float]:
    """Wait until every row is recorded and every event acknowledged; the window (wall clock).

    Done: ``expected`` records on the events topic (a record is there once the broker acked
    it; one event per new payment), no unprocessed staging row and the outbox empty. The
    counts are checked afterwards (:func:`check_counts`).
    The window starts at the first claim, converted from the database's clock to ours.
    """
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        consumer._client.add_topic(EVENTS_DEFAULT)
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(EVENTS_DEFAULT, p)
            for p in consumer.partitions_for_topic(EVENTS_DEFAULT) or ()
        ]
        progress = (-1, time.monotonic())
        while True:
            alive()
            events = await _events_written(consumer, partitions)
            if events != progress[0]:
                progress = (events, time.monotonic())
            elif time.monotonic() - progress[1] > STALL_SECONDS:
                raise SystemExit(
                    f"no new events for {STALL_SECONDS:.0f} s: {events:,} of {expected:,}"
                )
            if events >= expected:
                before = time.time()
                figures = await connection.fetchrow(PROGRESS)
                if figures["settled"]:
                    end = time.time()
                    offset = float(figures["now"]) - (before + end) / 2  # database - ours
                    return float(figures["first_claim"]) - offset, end
            await asyncio.sleep(0.1)
    finally:
        await consumer.stop()
        await connection.close()


async def check_counts(stack: Stack, references: set[str]) -> str:
    """Fail loudly unless rows = references = distinct event ids = N, ids as the project's."""
    expected = len(references)
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        counts = dict(await connection.fetchrow(COUNTS))
    finally:
        await connection.close()
    events = await read_records(stack, EVENTS_DEFAULT)
    event_ids = {json.loads(record.value)["event_id"] for record in events}
    wanted_ids = {str(uuid.uuid5(EVENT_ID_NAMESPACE, reference)) for reference in references}
    figures = {
        **counts,
        "events": len(events),
        "distinct_event_ids": len(event_ids),
        "event_ids_as_expected": len(event_ids & wanted_ids),
    }
    want = {
        "rows": expected,
        "distinct_rows": expected,
        "refs": expected,
        "matching_ids": expected,
        "unprocessed": 0,
        "distinct_event_ids": expected,
        "event_ids_as_expected": expected,
    }
    wrong = {name: (figures[name], value) for name, value in want.items() if figures[name] != value}
    if wrong:
        raise SystemExit(f"CORRECTNESS CHECK FAILED (got, wanted): {wrong}; all figures {figures}")
    return (
        f"rows {counts['rows']:,} = references {counts['refs']:,} = distinct event ids "
        f"{len(event_ids):,} = N ({len(events):,} events)"
    )


async def wait_group(stack: Stack, group: str, members: int, patience: float = 120) -> None:
    """Wait until ``group`` is Stable with ``members`` members (the peers' consumers joined)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the coordinator may not know the group yet
                response = (await admin.describe_consumer_groups([group]))[0]
                _error, _group, state, _type, _protocol, joined, *_ = response.groups[0]
                if state == "Stable" and len(joined) == members:
                    return
            await asyncio.sleep(0.2)
        raise SystemExit(
            f"consumer group {group} not stable with {members} members in {patience} s"
        )
    finally:
        await admin.close()


@contextlib.contextmanager
def started(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A peer process with its output in ``log``; SIGTERM (then kill) on exit."""
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def worker_env(run: str, overrides: dict[str, str]) -> dict[str, str]:
    """The workers' settings: the service's defaults but for these."""
    return {
        "KAFKA_CLIENT_ID": f"payments-{run}",  # a new consumer group and table per run
        "STAGING_INTERVAL_SECONDS": "1",
        "LOG_LEVEL": "info",
        **overrides,
    }


def effective_settings(stack: Stack, env: dict[str, str]) -> str:
    settings = Settings(
        kafka_brokers=[stack.kafka_bootstrap],
        **{name.lower(): value for name, value in env.items()},
    )
    return ", ".join(f"{name.upper()}={getattr(settings, name)}" for name in SHOWN_SETTINGS)


def run_once(
    stack: Stack,
    implementation: Implementation,
    rows: list[tuple[Any, ...]],
    references: set[str],
    overrides: dict[str, str],
    state: Path,
    folder: Path,
) -> Result:
    asyncio.run(fresh_pipeline(stack))
    asyncio.run(stage(stack, rows))
    run = run_id()
    home = folder / f"{implementation.kind}-{implementation.processes}-{run}"
    home.mkdir()
    dsn = (
        f"postgresql://{stack.db_username}:{stack.db_password}@{stack.db_host}:{stack.db_port}/"
        f"{stack.db_database}"
    )
    processes: list[subprocess.Popen[bytes]] = []
    roots = {role: [pid] for role, pid in stack_pids(state).items()}
    with Meter(roots) as meter, contextlib.ExitStack() as running:
        if implementation.kind == "project":
            env = worker_env(run, overrides)
            for number in range(1, implementation.processes + 1):
                worker_home = home / f"worker-{number}"
                worker_home.mkdir()
                worker = running.enter_context(
                    run_worker(stack, worker_home, WORKER_ID=f"bench-{run}-{number}", **env)
                )
                meter.add("pipeline", worker.process.pid)
                processes.append(worker.process)
        else:
            group = f"peer-{implementation.kind}-{run}"
            python = str(PEER_PYTHON[implementation.kind])
            for number in range(1, implementation.processes + 1):
                command = [python, "-m", PEER_CONSUMER[implementation.kind]]
                command += ["--kafka", stack.kafka_bootstrap, "--dsn", dsn, "--group", group]
                if implementation.kind == "quix":
                    command += ["--state-dir", str(home / f"state-{number}")]
                process = running.enter_context(started(command, home / f"consumer-{number}.log"))
                meter.add("pipeline", process.pid)
                processes.append(process)
            asyncio.run(wait_group(stack, group, implementation.processes))
            poller = [sys.executable, "-m", "bench.peers.poller"]
            poller += ["--kafka", stack.kafka_bootstrap, "--dsn", dsn]
            process = running.enter_context(started(poller, home / "poller.log"))
            meter.add("pipeline", process.pid)
            processes.append(process)

        def alive() -> None:
            for process in processes:
                if process.poll() is not None:
                    logs = "\n".join(
                        f"--- {log}\n{log.read_text(errors='replace')[-3000:]}"
                        for log in sorted(home.rglob("*.log"))
                    )
                    raise SystemExit(f"{implementation} died (exit {process.returncode}):\n{logs}")

        start, end = asyncio.run(wait_done(stack, len(references), alive))
        meter.sample()
        cpu = meter.between(start, end)
        peaks = [peak_rss_mb(process.pid) for process in processes]
    result = Result(implementation, 0, end - start, len(references), cpu, peaks)
    verdict = asyncio.run(check_counts(stack, references))
    print(
        f"  {implementation}: {result.seconds:.1f} s = {result.rate:,.0f} rows/s; CPU per row: "
        + ", ".join(f"{role} {result.per_row_us(role):.0f} µs" for role in sorted(cpu))
        + f"; peak RSS MiB {', '.join(f'{peak:.0f}' for peak in peaks)}; {verdict}",
        flush=True,
    )
    return result


# --- the report -------------------------------------------------------------------


def report(results: list[Result], implementations: list[Implementation], settings: str) -> None:
    print(
        f"\nmedians (rows/s; CPU µs per row in the same window); the workers' settings: {settings}"
    )
    print(
        "| implementation | runs | median rows/s | pipeline CPU/row | Postgres CPU/row "
        "| broker CPU/row | Redis CPU/row |"
    )
    print("|---|---|---|---|---|---|---|")
    figures = staging_figures(results, implementations)
    medians: dict[Implementation, float] = {}
    for implementation in implementations:
        runs = [result for result in results if result.implementation == implementation]
        medians[implementation] = figures.rates[(implementation.kind, implementation.processes)]

        def cpu(role: str, runs: list[Result] = runs) -> str:
            return f"{statistics.median(result.per_row_us(role) for result in runs):.0f} µs"

        print(
            f"| {implementation} | {len(runs)} | {medians[implementation]:,.0f} "
            f"| {cpu('pipeline')} | {cpu('postgres')} | {cpu('broker')} | {cpu('redis')} |"
        )
    projects = [i for i in implementations if i.kind == "project"]
    if projects and len(implementations) > len(projects):
        best = max(projects, key=medians.__getitem__)
        print(f"\nratios of medians to the best project run ({best}, {medians[best]:,.0f} rows/s):")
        for implementation in implementations:
            if implementation.kind != "project":
                print(
                    f"  {implementation}: {medians[implementation] / medians[best]:.2f} times "
                    "the project's rows/s"
                )
        rounds = sorted({result.round for result in results})
        print(f"paired within each round, the time of {best} / the peer's time:")
        for implementation in implementations:
            if implementation.kind == "project":
                continue
            pairs = []
            for number in rounds:
                mine = [
                    r for r in results if r.round == number and r.implementation == implementation
                ]
                theirs = [r for r in results if r.round == number and r.implementation == best]
                if mine and theirs:
                    pairs.append(theirs[0].seconds / mine[0].seconds)
            text = ", ".join(f"{pair:.2f}" for pair in pairs)
            print(f"  {implementation}: {text}")
    print()
    print(targets.report(targets.staging(figures)))


def staging_figures(
    results: list[Result], implementations: list[Implementation]
) -> targets.StagingFigures:
    """The medians the targets are judged on."""
    rates: dict[tuple[str, int], float] = {}
    pipeline: dict[tuple[str, int], float] = {}
    seconds: dict[int, float] = {}
    for implementation in implementations:
        runs = [result for result in results if result.implementation == implementation]
        key = (implementation.kind, implementation.processes)
        rates[key] = statistics.median(result.rate for result in runs)
        pipeline[key] = statistics.median(result.per_row_us("pipeline") for result in runs)
        if implementation.kind == "project":
            seconds[implementation.processes] = statistics.median(r.seconds for r in runs)
    peaks = [
        peak
        for result in results
        if result.implementation.kind == "project"
        for peak in result.peak_mib
    ]
    return targets.StagingFigures(rates, pipeline, seconds, peaks, results[0].rows)


def counts_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workers", type=counts_list, default=[1], help="worker counts: 1,2")
    parser.add_argument("--peers", action="store_true", help="run the peers of bench/peers too")
    parser.add_argument(
        "--consumers", type=counts_list, default=[1, 2], help="the peers' consumer counts: 1,2"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds (A B C A B C ...)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a worker setting"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the COPY ceiling")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)

    script_env = native_stack_env()
    stack = native_stack(script_env)
    state = ROOT / script_env["PAYMENTS_STATE_DIR"]
    implementations = [Implementation("project", count) for count in args.workers]
    if args.peers:
        implementations += [Implementation(kind, n) for kind in PEERS for n in args.consumers]
    asyncio.run(fresh_pipeline(stack))
    print(f"generating {args.rows:,} rows ...", flush=True)
    load = make_load(args.rows, f"B{run_id()}", duplicate_rate=0, conflict_rate=0, invalid_rate=0)
    references = {row[0] for row in load.rows}
    print(
        f"stack: Kafka {stack.kafka_bootstrap}, Postgres {stack.db_port}, "
        f"Redis {stack.redis_port}, state {state}"
    )
    settings = effective_settings(stack, worker_env("x", overrides))
    print(f"workers' settings: {settings}")
    print(
        "peers: claims of 1,000 rows; plain: fetches of up to 2,000; quix: checkpoint every "
        "0.5 s or 2,000 records"
    )
    if not args.no_ceiling:
        ceiling = asyncio.run(copy_ceiling(stack, load.rows))
        print(
            f"ceiling: COPY of {args.rows:,} rows in {ceiling:.1f} s "
            f"= {args.rows / ceiling:,.0f} rows/s"
        )

    folder = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    results = []
    for number in range(1, args.rounds + 1):
        # Each round starts one further along, so no implementation always runs first.
        shift = (number - 1) % len(implementations)
        order = implementations[shift:] + implementations[:shift]
        print(f"round {number}: {' → '.join(str(i) for i in order)}", flush=True)
        for implementation in order:
            result = run_once(
                stack, implementation, load.rows, references, overrides, state, folder
            )
            result.round = number
            results.append(result)
    report(results, implementations, settings)
    print(f"\nlogs under {folder}; rerun: {' '.join(['bench/staging', *sys.argv[1:]])}")


if __name__ == "__main__":
    main()
