"""bench/meter.py counts a process tree by PID, its reaped children included, in one window."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

from bench.meter import Meter, tree_seconds

#: A parent that runs a child burning ~0.4 s of CPU, waits for it (reaps it), then idles.
PARENT = """
import subprocess, sys, time
subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.4\\n"
                "while time.process_time() < end: pass"], check=True)
print("reaped", flush=True)
time.sleep(30)
"""


@contextlib.contextmanager
def parent_of_a_reaped_child() -> Iterator[subprocess.Popen[str]]:
    """PARENT running, its child already burnt its CPU and reaped."""
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            assert parent.stdout.readline().strip() == "reaped"
            yield parent
        finally:
            parent.kill()


def test_a_tree_counts_its_reaped_children() -> None:
    with parent_of_a_reaped_child() as parent:
        # The child is gone: only the parent's cutime/cstime still holds its CPU.
        assert tree_seconds(parent.pid) >= 0.4


def test_a_window_counts_only_what_was_spent_inside_it() -> None:
    with parent_of_a_reaped_child() as parent, Meter({"tree": [parent.pid]}, 0.05) as meter:
        quiet = time.time()
        time.sleep(0.3)
        idle = meter.between(quiet, time.time())
        _, now = meter.sample()
    assert now["tree"] >= 0.4
    assert idle["tree"] < 0.1


def test_interpolates_between_samples() -> None:
    meter = Meter({})
    meter._times = [10.0, 11.0]
    meter._figures = [{"x": 1.0}, {"x": 3.0}]
    assert meter.at(10.25) == {"x": 1.5}
    assert meter.between(10.5, 11.0) == {"x": 1.0}
    assert meter.at(12.0) == {"x": 3.0}
