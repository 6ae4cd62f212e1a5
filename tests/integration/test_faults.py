"""Faults injected into the running pipeline; the harness of tests/faults.py checks what survives.

Each test: load, one kind of fault, repair, drain, then the invariants
(``check_invariants``) plus the scenario's own exact criterion. FAULT_SEED
replays a run's load and fault points.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults import Fleet, Ledger, check_invariants, settle, wait_rows
from tests.pipeline import app_env, make_load, stage
from tests.stack import Stack

pytestmark = pytest.mark.faults

#: Short enough that a worker gone for SESSION + 5 s has left the group (a rebalance).
SESSION_SECONDS = 10


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
