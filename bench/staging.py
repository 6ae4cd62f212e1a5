"""The staging benchmark: N rows staged → recorded with events, against a COPY ceiling.

Run it with ``bench/staging`` (which brings its own stack up). It prints:
- the ceiling: one asyncpg COPY of the same rows into payment_references and
  payments (no validation, no Kafka, no outbox) — the fastest these rows can land;
- the pipeline: from the poller's first claim to the moment every row is recorded
  and every event published (outbox empty), and the same from the worker's start;
- the ratio pipeline/ceiling (rows/s), and the worker's peak memory (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from app.models import fingerprint_of, payment_id_for
from app.recording.payment_store import PAYMENT_COLUMNS
from tests.pipeline import app_env, fresh_pipeline, make_load, run_id, stage, wait_drained
from tests.stack import Stack, native_stack, native_stack_env, run_worker

EMPTY_PAYMENTS = "TRUNCATE payment_service.payments, payment_service.payment_references"
#: The pipeline's span so far, by the database clock: from the first staging claim to now
#: (asked as soon as the drain is seen: every row recorded, the outbox empty).
SPAN = """
SELECT extract(epoch FROM timezone('utc', now())
                          - (SELECT min(started_at) FROM payment_service.staging_process_log))
"""


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


async def span(stack: Stack) -> float:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        return float(await connection.fetchval(SPAN))
    finally:
        await connection.close()


def cpu_seconds_by_role(workers: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the broker, Postgres and the workers.

    A worker's helper processes count as the worker's.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        pid = int(entry.name)
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[pid], names[pid] = int(fields[1]), name
        seconds[pid] = (int(fields[11]) + int(fields[12])) / tick

    def role(pid: int) -> str | None:
        if names[pid] == "java":
            return "broker"
        if names[pid] == "postgres":
            return "postgres"
        while pid > 1:
            if pid in workers:
                return "workers"
            pid = parents.get(pid, 1)
        return None

    totals = {"workers": 0.0, "postgres": 0.0, "broker": 0.0}
    for pid, spent in seconds.items():
        owner = role(pid)
        if owner is not None:
            totals[owner] += spent
    return totals


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000, help="STAGING_BATCH_SIZE")
    parser.add_argument("--record-batch-size", type=int, default=2000, help="RECORD_BATCH_SIZE")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (one machine)")
    args = parser.parse_args()

    stack = native_stack(native_stack_env())
    run = run_id()
    asyncio.run(fresh_pipeline(stack))
    print(f"generating {args.rows:,} rows ...", flush=True)
    load = make_load(args.rows, f"B{run}", duplicate_rate=0, conflict_rate=0, invalid_rate=0)

    ceiling = asyncio.run(copy_ceiling(stack, load.rows))
    ceiling_rate = args.rows / ceiling
    print(f"ceiling: COPY of {args.rows:,} rows in {ceiling:.1f} s = {ceiling_rate:,.0f} rows/s")

    asyncio.run(stage(stack, load.rows))
    env = app_env(
        run,
        STAGING_BATCH_SIZE=str(args.batch_size),
        RECORD_BATCH_SIZE=str(args.record_batch_size),
        LOG_LEVEL="info",
        DB_POOL_MAX="20",
    )
    folder = Path(tempfile.mkdtemp(prefix="bench-staging-"))
    cpu_before = cpu_seconds_by_role([])
    started = time.time()
    with contextlib.ExitStack() as running:
        workers = []
        for number in range(1, args.workers + 1):
            home = folder / f"worker-{number}"
            home.mkdir()
            workers.append(
                running.enter_context(
                    run_worker(stack, home, WORKER_ID=f"bench-{run}-{number}", **env)
                )
            )

        def alive() -> None:
            for worker in workers:
                if worker.process.poll() is not None:
                    raise SystemExit(f"a worker died:\n{worker.log()[-3000:]}")

        asyncio.run(wait_drained(stack, args.rows, wait_seconds=1800, alive=alive, interval=0.5))
        pipeline = asyncio.run(span(stack))
        total = time.time() - started
        peaks = [peak_rss_mb(worker.process.pid) for worker in workers]
        cpu_after = cpu_seconds_by_role([worker.process.pid for worker in workers])
    rate = args.rows / pipeline
    print(
        f"pipeline: {args.rows:,} rows recorded + events published in {pipeline:.1f} s "
        f"= {rate:,.0f} rows/s (from worker start: {total:.1f} s)"
    )
    print(f"ratio pipeline/ceiling: {rate / (args.rows / ceiling):.3f}")
    used = {name: spent - cpu_before[name] for name, spent in cpu_after.items()}
    cpu = ", ".join(
        f"{name} {spent:.0f} s ({spent / args.rows * 1e6:.0f} µs/row)"
        for name, spent in used.items()
    )
    print(f"CPU from worker start to drained: {cpu}")
    memory = ", ".join(f"{peak:.0f}" for peak in peaks)
    print(f"workers: {args.workers}; peak memory (VmHWM) MiB: {memory}; logs under {folder}")


if __name__ == "__main__":
    main()
