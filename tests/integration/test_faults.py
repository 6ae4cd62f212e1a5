"""Faults injected into the running pipeline; the harness of tests/faults.py checks what survives.

Each test: load, one kind of fault, repair, drain, then the invariants
(``check_invariants``) plus the scenario's own exact criterion. FAULT_SEED
replays a run's load and fault points.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.faults import (
    SECRET,
    WEBHOOK,
    Fleet,
    Ledger,
    StagingFeed,
    WebhookLoad,
    check_hostile,
    check_invariants,
    committed_offsets,
    crash,
    freeze_holding_the_poller_lock,
    hostile_inputs,
    intake_keys_below,
    is_stopped,
    paused,
    recorded_references,
    restart,
    restored,
    send_hostile,
    settle,
    stack_redis,
    stage_load,
    wait_rows,
    warm_up,
)
from tests.pipeline import StagingLoad, app_env, fetch, make_load, stage
from tests.stack import Stack, Worker, wait_for
from tests.webhook_client import signed

#: Loads, faults and drains take minutes: each test gets up to ten.
pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]

#: Short enough that a worker gone for SESSION + 5 s has left the group (a rebalance).
SESSION_SECONDS = 10
#: Load kept on after a broker repair, and the longest wait for the first 2xx after it.
RECOVERY_SECONDS = 15
RECOVERY_WAIT_SECONDS = 90
#: How long the ETL takes to write the 100k rows of the SIGKILL scenario.
STAGING_SECONDS = 150


def test_five_sigkills_of_three_workers_during_a_100k_staging_load(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    load = make_load(100_000, f"K{run}", seed=ledger.seed)
    env = app_env(run, KAFKA_SESSION_TIMEOUT_SECONDS=str(SESSION_SECONDS))
    # The ETL writes the rows over STAGING_SECONDS, so the kills fall inside the load.
    # A kill comes once the pipeline has recorded another 4-7% of it since the last
    # restart; the second and fourth victims stay down past the session timeout, so
    # the group rebalances without them and again when they come back. The others
    # come back at once (static membership: no rebalance).
    kills: list[tuple[int, int]] = []
    with (
        Fleet(stack, tmp_path, 3, run, **env) as fleet,
        StagingFeed(stack, ledger, load.rows, seconds=STAGING_SECONDS, chunks=75) as feed,
    ):
        rows = 0
        for number in range(5):
            victim = ledger.rng.randrange(3)
            gap = ledger.rng.uniform(0.04, 0.07) * load.created
            rows = wait_rows(stack, int(rows + gap), fleet)
            fleet.kill(victim)
            kills.append((victim, rows))
            if number in (1, 3):
                time.sleep(SESSION_SECONDS + 5)  # the others see it gone: a rebalance
            fleet.start(victim).wait_web()
        ledger.check(not feed.done.is_set(), f"the ETL had finished before the last kill: {kills}")
        settle(stack, run, ledger, fleet)
    final = check_invariants(stack, run, ledger, payments=load.created)
    print(f"kills (worker, rows recorded then): {kills}; {final}")


def test_broker_sigkill_and_sigstop_during_webhook_load(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    env = app_env(run, WEBHOOK_SECRET=SECRET, KAFKA_SESSION_TIMEOUT_SECONDS=str(SESSION_SECONDS))
    outages: dict[str, tuple[float, float]] = {}
    with restored(stack), Fleet(stack, tmp_path, 2, run, **env) as fleet:
        for worker in fleet.workers:
            worker.wait_web()
        load = WebhookLoad(ledger, [worker.base_url for worker in fleet.workers], f"B{run}")
        load.warm_up()
        with load:
            time.sleep(10)
            crash(stack, "kafka")
            down = time.monotonic()
            time.sleep(ledger.rng.uniform(10, 15))
            outages["crash"] = (down, time.monotonic())
            restart(stack, "kafka")
            resumed(ledger, load, fleet, "the broker's restart", since=time.monotonic())
            with paused(stack, "kafka"):
                stopped = time.monotonic()
                time.sleep(40)
                outages["pause"] = (stopped, time.monotonic())
            resumed(ledger, load, fleet, "the broker's SIGCONT", since=time.monotonic())
        fleet.alive()
        settle(stack, run, ledger, fleet)
        fleet.alive()
    figures = check_invariants(stack, run, ledger)
    seen: dict[str, Counter[int]] = {}
    for fault, (start, end) in outages.items():
        answers = load.between(start, end)
        seen[fault] = Counter(a.status for a in answers)
        refused = [a for a in answers if a.status == 503 and a.retry_after]
        hot = [a for a in answers if a.status == 200 and a.body.get("status") == "duplicate"]
        other = [a for a in answers if a not in refused and a not in hot]
        ledger.check(
            not other,
            f"while the broker was down ({fault}), answers other than 503 with Retry-After "
            f"or a cached duplicate: {other[:5]}",
        )
        ledger.check(bool(refused), f"no 503 while the broker was down ({fault}): {answers[:5]}")
        # Answered after the repair or not: never a server error, never no answer.
        failed = [a for a in load.answers if start <= a.started < end and a.status in (0, 500)]
        ledger.check(not failed, f"requests sent during the {fault} failed: {failed[:5]}")
    everything = Counter(a.status for a in load.answers)
    print(f"answers {dict(everything)}; while down {seen}; {figures}")


def resumed(ledger: Ledger, load: WebhookLoad, fleet: Fleet, repair: str, since: float) -> None:
    """Keep the load on for RECOVERY_SECONDS; new payments must be answered 201/202 by then
    (or within RECOVERY_WAIT_SECONDS on a slow machine)."""
    deadline = since + RECOVERY_WAIT_SECONDS
    while time.monotonic() < since + RECOVERY_SECONDS or (
        not load.acknowledged_after(since) and time.monotonic() < deadline
    ):
        fleet.alive()
        time.sleep(0.5)
    ledger.check(
        load.acknowledged_after(since) > 0,
        f"no new payment answered 201/202 within {RECOVERY_WAIT_SECONDS} s of {repair}",
    )


def test_postgres_crash_mid_batch_moves_no_offset_past_an_uncommitted_batch(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    # Unique references only: a record skipped by its offset cannot hide behind a copy.
    load = stage_load(
        stack, ledger, 30_000, f"P{run}", duplicate_rate=0, conflict_rate=0, invalid_rate=0.02
    )
    with restored(stack), Fleet(stack, tmp_path, 2, run, **app_env(run)) as fleet:
        wait_rows(stack, int(ledger.rng.uniform(0.2, 0.5) * load.created), fleet)
        crash(stack, "postgres")
        asyncio.run(asyncio.sleep(8))  # batches in flight fail; retries back off
        fleet.alive()
        # Freeze the workers, then restart Postgres: it holds exactly what was
        # committed before the crash, and nobody can add to it while we look.
        fleet.signal(signal.SIGSTOP)
        committed = asyncio.run(committed_offsets(stack, run))
        restart(stack, "postgres")
        in_postgres = recorded_references(stack)
        fleet.signal(signal.SIGCONT)
        below = intake_keys_below(stack, committed)
        undecided = [
            (partition, offset, reference)
            for partition, offset, reference in below
            if reference not in in_postgres
        ]
        ledger.check(
            not undecided,
            f"{len(undecided)} intake records below the committed offsets were not recorded "
            f"when Postgres crashed, e.g. {undecided[:5]}",
        )
        ledger.check(len(below) < load.created, "the crash came after the whole load")
        settle(stack, run, ledger, fleet)
    final = check_invariants(stack, run, ledger, payments=load.created)
    print(f"{len(below)} records below the offsets committed during the outage; {final}")


def test_redis_flushed_killed_and_paused_during_webhook_load(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    windows: dict[str, tuple[float, float]] = {}

    def fault(
        name: str, seconds: float, begin: Callable[[], None], end: Callable[[], None]
    ) -> None:
        started = time.monotonic()
        begin()
        time.sleep(seconds)
        end()
        windows[name] = (started, time.monotonic())
        time.sleep(6)  # between faults: Redis back, the clients reconnected

    env = app_env(run, WEBHOOK_SECRET=SECRET)
    with restored(stack), Fleet(stack, tmp_path, 1, run, **env) as fleet:
        worker = fleet.workers[0]
        warm_up(worker, ledger)
        redis = stack_redis(stack)
        with WebhookLoad(ledger, [worker.base_url], f"R{run}", duplicate_rate=0.3) as load:
            time.sleep(6)
            fault("flush", 6, redis.flushall, lambda: None)
            fault("kill", 6, lambda: crash(stack, "redis"), lambda: restart(stack, "redis"))
            fault(
                "pause",
                6,
                lambda: stack.script("pause", "redis"),
                lambda: stack.script("resume", "redis"),
            )
        settle(stack, run, ledger, fleet)
    final = check_invariants(stack, run, ledger)
    for name, (started, ended) in windows.items():
        during = [a for a in load.answers if started <= a.started and a.ended <= ended + 1]
        failed = [(a.status, a.body) for a in during if a.status == 0 or a.status >= 500]
        ledger.check(not failed, f"Redis {name}: {len(failed)} failed answers, e.g. {failed[:3]}")
        new = [a for a in during if a.status in (201, 202)]
        ledger.check(len(new) > 0, f"Redis {name}: no new payment acknowledged meanwhile")
    print(f"{len(load.answers)} webhooks, {final}")


def _load_for_a_freeze(
    stack: Stack, run: str, prefix: str
) -> tuple[Ledger, StagingLoad, dict[str, str]]:
    """20,000 staged rows, and settings that let a frozen worker go in SESSION_SECONDS:
    its group membership, and its idle transactions (claims and locks) in Postgres."""
    ledger = Ledger()
    load = stage_load(
        stack, ledger, 20_000, prefix, duplicate_rate=0.05, conflict_rate=0, invalid_rate=0
    )
    env = app_env(
        run,
        KAFKA_SESSION_TIMEOUT_SECONDS=str(SESSION_SECONDS),
        DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS=str(SESSION_SECONDS),
    )
    return ledger, load, env


def _rejoin_and_settle(
    stack: Stack, run: str, ledger: Ledger, fleet: Fleet, thawed: Worker
) -> None:
    """Wait for a thawed worker to be ready again (back in the group), then for the drain."""
    wait_for(
        lambda: thawed.get("/health/ready")[0] == 200,
        timeout=120,
        what="the thawed worker to rejoin the group",
    )
    settle(stack, run, ledger, fleet)


def test_a_zombie_worker_does_not_apply_its_batch_twice(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger, load, env = _load_for_a_freeze(stack, run, f"Z{run}")
    with Fleet(stack, tmp_path, 0, run, **env) as fleet:
        # The zombie stops itself (SIGSTOP) inside its first batch's transaction,
        # its references claimed and uncommitted, in the middle of a statement;
        # the other worker must take over.
        zombie = fleet.add(FAULT_POINT="freeze_in_transaction")
        survivor = fleet.add()
        wait_for(lambda: is_stopped(zombie), timeout=180, what="the zombie to freeze")
        # Liveness: everything is recorded while the zombie is still frozen (its
        # partitions moved after the session timeout, its claims were released when
        # the survivor ended its session, stalled mid-statement where Postgres' idle
        # timeout does not reach).
        wait_rows(stack, load.created, fleet)
        ledger.check(
            survivor.logged("mid-statement for its client"),
            "the survivor never ended the zombie's stalled session",
        )
        ledger.check(is_stopped(zombie), "the zombie woke up before the load was recorded")
        zombie.process.send_signal(signal.SIGCONT)
        # The zombie resumes its batch on a session Postgres has ended, retries
        # it (every reference is taken now) and rejoins the group.
        wait_for(
            lambda: zombie.assert_alive() or zombie.logged("record batch failed (attempt 1)"),
            timeout=60,
            what="the zombie to retry its stale batch",
        )
        _rejoin_and_settle(stack, run, ledger, fleet, zombie)
    final = check_invariants(stack, run, ledger, payments=load.created)
    print(f"zombie: {final}")


def test_a_worker_frozen_while_draining_staging_leaves_the_table_to_another(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    # The poller's lock lives as long as its drain. A worker frozen mid-drain must
    # not keep it: Postgres ends the lock's idle transaction, and the worker that
    # becomes leader drains the table while the frozen one is still stopped.
    ledger, load, env = _load_for_a_freeze(stack, run, f"F{run}")
    with Fleet(stack, tmp_path, 1, run, **env) as fleet:
        frozen = fleet.workers[0]
        wait_for(
            lambda: frozen.assert_alive() or freeze_holding_the_poller_lock(stack, frozen),
            timeout=180,
            interval=0.05,
            what="the only poller to freeze mid-drain",
        )
        fleet.add()
        wait_rows(stack, load.created, fleet)
        ledger.check(is_stopped(frozen), "the frozen poller woke up before the load was recorded")
        frozen.process.send_signal(signal.SIGCONT)
        _rejoin_and_settle(stack, run, ledger, fleet, frozen)
    final = check_invariants(stack, run, ledger, payments=load.created)
    print(f"frozen poller: {final}")


def test_two_workers_racing_the_same_references_through_both_inputs(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    count = 400
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    payments = [
        (
            f"X{run}-{n:05d}",
            f"LN{n:07d}",
            f"C{n:07d}",
            Decimal(ledger.rng.randrange(100, 10**6)) / 100,
        )
        for n in range(count)
    ]
    rows = [
        (ref, loan, cif, amount, day.replace(tzinfo=None), None, "{}")
        for ref, loan, cif, amount in payments
    ]
    bodies = [
        (
            ref,
            json.dumps(
                {
                    "reference_number": ref,
                    "loan_account_number": loan,
                    "cif": cif,
                    "amount": str(amount),
                    "payment_date": day.date().isoformat(),
                }
            ).encode(),
        )
        for ref, loan, cif, amount in payments
    ]
    ledger.staged(rows)
    env = app_env(run, WEBHOOK_SECRET=SECRET)
    with Fleet(stack, tmp_path, 2, run, **env) as fleet:
        for worker in fleet.workers:
            warm_up(worker, ledger)
        urls = [worker.base_url + WEBHOOK for worker in fleet.workers]

        async def race() -> list[tuple[str, int, dict[str, Any]]]:
            # Every reference at once: staged, and posted to both workers.
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:

                async def post(url: str, ref: str, body: bytes) -> tuple[str, int, dict[str, Any]]:
                    headers = {
                        "Content-Type": "application/json",
                        **signed(SECRET, body, msg_id=f"msg_{uuid.uuid4().hex}"),
                    }
                    async with session.post(url, data=body, headers=headers) as response:
                        return ref, response.status, await response.json()

                posts = [post(url, ref, body) for ref, body in bodies for url in urls]
                _, *answers = await asyncio.gather(stage(stack, rows), *posts)
                return answers

        answers = asyncio.run(race())
        settle(stack, run, ledger, fleet)
    final = check_invariants(stack, run, ledger)
    payment_ids = {
        row["reference_number"]: str(row["id"])
        for row in fetch(stack, "SELECT reference_number, id FROM payment_service.payments")
    }
    racing = {ref for ref, _ in bodies}
    created = Counter(ref for ref, status, _ in answers if status == 201)
    odd = [(ref, status, body) for ref, status, body in answers if status not in (200, 201, 202)]
    ledger.check(not odd, f"answers other than 200/201/202: {odd[:5]}")
    ledger.check(
        max(created.values(), default=0) <= 1,
        f"two 201s for one reference: {created.most_common(3)}",
    )
    wrong = [
        (ref, body) for ref, _, body in answers if body.get("payment_id") != payment_ids.get(ref)
    ]
    ledger.check(not wrong, f"answers naming another payment than the row's: {wrong[:3]}")
    ledger.check(racing <= set(payment_ids), "racing references not recorded")
    ledger.check(
        final.events == final.distinct_events,
        f"{final.repeated_events} events published twice: one event per reference expected",
    )
    print(f"race: {len(answers)} webhooks, {sum(created.values())} answered 201; {final}")


def test_hostile_data_through_every_door_with_good_records_behind(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    """Issue 16's data faults under load: every class of bad input through the webhook,
    the staging table and straight onto payment.intake, with good webhooks, staged rows
    and raw records behind them on the same partitions. Criteria: each bad input is
    refused with a 4xx or dead-lettered with its reason (its staging row processed),
    never recorded; no good record is lost or doubled (the invariants); no answer is a
    5xx; both workers live throughout."""
    ledger = Ledger()
    env = app_env(run, WEBHOOK_SECRET=SECRET)
    inputs = hostile_inputs(f"H{run}", ledger)
    good_rows = make_load(4_000, f"H{run}-S", seed=ledger.seed, invalid_rate=0)
    with Fleet(stack, tmp_path, 2, run, **env) as fleet:
        for worker in fleet.workers:
            warm_up(worker, ledger)
        urls = [worker.base_url for worker in fleet.workers]
        load = WebhookLoad(ledger, urls, f"H{run}")
        with load, StagingFeed(stack, ledger, good_rows.rows, seconds=20, chunks=8):
            time.sleep(3)
            statuses = send_hostile(stack, urls, inputs, ledger)
            time.sleep(5)
        fleet.alive()
        settle(stack, run, ledger, fleet)
        fleet.alive()
    figures = check_invariants(stack, run, ledger)
    check_hostile(stack, ledger, inputs, statuses)
    errors = [a for a in load.answers if a.status >= 500 or a.status == 0]
    ledger.check(not errors, f"good webhooks answered 5xx or not at all: {errors[:5]}")
    print(f"hostile: {len(inputs)} inputs, webhook answers {sorted(statuses.values())}; {figures}")
