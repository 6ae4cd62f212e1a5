"""Faults injected into the running pipeline; the harness of tests/faults.py checks what survives.

Each test: load, one kind of fault, repair, drain, then the invariants
(``check_invariants``) plus the scenario's own exact criterion. FAULT_SEED
replays a run's load and fault points.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.faults import (
    SECRET,
    Fleet,
    Ledger,
    WebhookLoad,
    check_invariants,
    crash,
    paused,
    restart,
    restored,
    settle,
    wait_rows,
)
from tests.pipeline import app_env, make_load, stage
from tests.stack import Stack

pytestmark = pytest.mark.faults

#: Short enough that a worker gone for SESSION + 5 s has left the group (a rebalance).
SESSION_SECONDS = 10
#: Load kept on after a broker repair, and the longest wait for the first 2xx after it.
RECOVERY_SECONDS = 15
RECOVERY_WAIT_SECONDS = 90


def test_five_sigkills_of_three_workers_during_a_100k_staging_load(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    ledger = Ledger()
    load = make_load(100_000, f"K{run}", seed=ledger.seed)
    ledger.staged(load.rows)
    asyncio.run(stage(stack, load.rows))
    env = app_env(run, KAFKA_SESSION_TIMEOUT_SECONDS=str(SESSION_SECONDS))
    # Five kill points spread over the load; the second and the fourth victim stay
    # down past the session timeout, so the group rebalances without it and again
    # when it comes back. The others come back at once (static membership).
    points = [(0.08 + 0.14 * n + ledger.rng.uniform(0, 0.06)) * load.created for n in range(5)]
    victims = [ledger.rng.randrange(3) for _ in points]
    kills = []
    with Fleet(stack, tmp_path, 3, run, **env) as fleet:
        for number, (point, victim) in enumerate(zip(points, victims, strict=True)):
            rows = wait_rows(stack, int(point), fleet)
            fleet.kill(victim)
            kills.append((victim, rows))
            if number in (1, 3):
                # The two others must see it gone: wait past its session.
                asyncio.run(asyncio.sleep(SESSION_SECONDS + 5))
            fleet.start(victim).wait_web()
        settle(stack, run, ledger, fleet)
    final = check_invariants(stack, run, ledger)
    ledger.check(
        kills[-1][1] < load.created, f"the last kill came after the load was recorded: {kills}"
    )
    ledger.check(final.rows == load.created, f"{final} for {load.created} payments")
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
