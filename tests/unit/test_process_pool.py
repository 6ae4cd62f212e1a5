"""Helper processes: work runs elsewhere (inline at size 0), and helpers die with their worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from app.intake.process_pool import ProcessPool
from tests.stack import ROOT

ORPHAN_SCRIPT = """
import asyncio, os, time
from app.intake.process_pool import ProcessPool

async def main():
    pool = ProcessPool(1)
    print(await pool.run(os.getpid), flush=True)
    time.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


async def test_work_runs_in_a_helper_process_and_inline_at_size_zero() -> None:
    pool = ProcessPool(1)
    try:
        assert await pool.run(os.getpid) != os.getpid()
        assert await pool.run(sum, [1, 2, 3]) == 6
    finally:
        await pool.on_stop()
    assert await ProcessPool(0).run(os.getpid) == os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_helper_exits_when_its_worker_is_killed() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert worker.stdout is not None
        helper = int(worker.stdout.readline())
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(helper), "the helper outlived its worker"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
        if worker.stdout is not None:
            worker.stdout.close()
