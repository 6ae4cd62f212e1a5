"""CPU seconds of the bench stack's own processes, by PID, sampled over one run.

Only the processes of the stack ``bench/staging`` brought up, found by their PID files in its
state folder, and the pipeline processes it started itself: never a process by its name (the
dev and test stacks run the same programs on this machine). A process counts with everything
below it: its own user + system time, its reaped children's (``cutime``/``cstime`` of
``/proc/<pid>/stat``: the postmaster waits for every backend, so backends that have exited
still count, such as the drain checks' connections and autovacuum workers), and its live
descendants'. A sampler thread reads the figures every ``interval`` seconds; a window's CPU is
the difference of the figures interpolated at its two ends.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def stack_pids(state: Path) -> dict[str, int]:
    """The broker's, the postmaster's and Redis' PIDs from the stack's PID files."""
    files = {
        "broker": state / "kafka" / "kafka.pid",
        "postgres": state / "postgres" / "data" / "postmaster.pid",
        "redis": state / "redis" / "redis.pid",
    }
    pids = {}
    for role, path in files.items():
        try:
            pids[role] = int(path.read_text().split()[0])
        except (OSError, IndexError, ValueError):
            raise SystemExit(
                f"no PID in {path}: is the bench stack up (scripts/stack up)?"
            ) from None
    return pids


def own_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # After the name: state, ppid, ... utime is field 14 of stat(5), the 12th after ")".
    return sum(int(value) for value in fields[11:15]) / TICK


def children(pid: int) -> list[int]:
    """The live children of ``pid``, whichever of its threads started them."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_seconds(root: int) -> float:
    """CPU seconds of ``root`` and everything below it, live or reaped."""
    total = 0.0
    pending = [root]
    while pending:
        pid = pending.pop()
        total += own_seconds(pid)
        pending += children(pid)
    return total


class Meter:
    """Samples the CPU of named groups of process trees in a thread (``with Meter(...)``)."""

    def __init__(self, roots: Mapping[str, Iterable[int]], interval: float = 0.1) -> None:
        self._roots = {role: list(pids) for role, pids in roots.items()}
        self._interval = interval
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._figures: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meter", daemon=True)

    def __enter__(self) -> Meter:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, role: str, pid: int) -> None:
        """Count ``pid``'s tree in ``role`` from now on (start it right after the sampler)."""
        with self._lock:
            self._roots.setdefault(role, []).append(pid)

    def sample(self) -> tuple[float, dict[str, float]]:
        """Read every group now; the sample is kept for :meth:`between`."""
        with self._lock:
            roots = {role: list(pids) for role, pids in self._roots.items()}
        figures = {role: sum(tree_seconds(pid) for pid in pids) for role, pids in roots.items()}
        now = time.time()
        with self._lock:
            self._times.append(now)
            self._figures.append(figures)
        return now, figures

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def at(self, moment: float) -> dict[str, float]:
        """Each group's CPU seconds at ``moment`` (wall clock), interpolated between samples."""
        with self._lock:
            times, figures = list(self._times), list(self._figures)
        index = bisect.bisect_left(times, moment)
        if index == 0:
            return dict(figures[0])
        if index == len(times):
            return dict(figures[-1])
        before, after = times[index - 1], times[index]
        share = (moment - before) / (after - before)
        return {
            role: figures[index - 1].get(role, 0.0)
            + share * (figures[index].get(role, 0.0) - figures[index - 1].get(role, 0.0))
            for role in figures[index]
        }

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds each group spent from ``start`` to ``end`` (wall clock)."""
        first, last = self.at(start), self.at(end)
        return {role: last[role] - first.get(role, 0.0) for role in last}
