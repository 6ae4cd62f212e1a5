"""Crashes during recording: SIGKILL mid-load, and death between the commit and the publish."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from app.fault_points import FAULT_EXIT_CODE
from app.kafka.topics import EVENTS_DEFAULT
from tests.pipeline import (
    app_env,
    assert_recorded_once,
    drain_figures,
    make_load,
    read_topic,
    reconcile,
    stage,
    wait_consumed,
    wait_drained,
)
from tests.stack import Stack, run_worker, wait_for


def test_sigkill_mid_load_loses_nothing_and_records_nothing_twice(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    load = make_load(50_000, f"S{run}", duplicate_rate=0.05, conflict_rate=0, invalid_rate=0)
    asyncio.run(stage(stack, load.rows))
    env = app_env(run, WORKER_ID=f"kill-{run}")

    with run_worker(stack, tmp_path, **env) as worker:

        def midway() -> bool:
            worker.assert_alive()
            rows = asyncio.run(drain_figures(stack))["rows"]
            return rows >= 5_000

        wait_for(midway, timeout=240, interval=0.2, what="the load to be under way")
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=10)
        at_kill = asyncio.run(drain_figures(stack))
    assert at_kill["rows"] < load.created, "the kill came too late to test anything"

    with run_worker(stack, tmp_path, **env) as worker:
        asyncio.run(wait_drained(stack, load.created, wait_seconds=300, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=120))

    assert_recorded_once(stack, run, load.created)


def test_death_between_commit_and_publish_is_repaired_by_the_relay(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    load = make_load(500, f"F{run}", duplicate_rate=0, conflict_rate=0, invalid_rate=0)
    asyncio.run(stage(stack, load.rows))
    env = app_env(run, WORKER_ID=f"fault-{run}")

    with run_worker(stack, tmp_path, FAULT_POINT="after_commit", **env) as worker:
        wait_for(lambda: worker.process.poll() is not None, timeout=120, what="the fault point")
        assert worker.process.returncode == FAULT_EXIT_CODE, worker.log()[-3000:]
    committed = asyncio.run(drain_figures(stack))
    assert committed["rows"] > 0
    assert committed["unsent"] == committed["rows"], "the events must still be unsent"
    assert asyncio.run(read_topic(stack, EVENTS_DEFAULT)) == []

    with run_worker(stack, tmp_path, **env) as worker:
        asyncio.run(wait_drained(stack, load.created, wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=60))
        assert worker.logged("outbox relay: published")

    events = asyncio.run(read_topic(stack, EVENTS_DEFAULT))
    assert len(events) == load.created
    assert len({json.loads(value)["event_id"] for _, value in events}) == load.created
    code, report = reconcile(stack, run)
    assert code == 0, report
