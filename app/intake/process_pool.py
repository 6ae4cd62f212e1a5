"""A pool of helper processes for CPU-only work, started on first use and stopped with the app.

With ``STAGING_HELPER_PROCESSES`` above 0 the staging poller checks and encodes
its rows there. Off by default: the pickling both ways and the executor's
threads make the pipeline spend ~5-15% more CPU per row, and only a leader
with a core to spare moves rows faster with a helper (bench/README.md, "The
staging helper process, a third time"). ``spawn``: the worker has threads
(RocksDB's), which ``fork`` must not copy.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from mode import Service

from app import collector

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a helper checks that the worker that started it still runs.
PARENT_CHECK_SECONDS = 1.0


class ProcessPool(Service):
    """``await pool.run(function, *args)``: in a helper process, or inline when size is 0."""

    def __init__(self, size: int, **kwargs: Any) -> None:
        self.size = size
        self._executor: ProcessPoolExecutor | None = None
        super().__init__(**kwargs)

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        if self.size == 0:
            return function(*args)
        if self._executor is None:
            log.info("starting %d helper process(es) for CPU-bound work", self.size)
            self._executor = ProcessPoolExecutor(
                max_workers=self.size,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=start_helper,
                initargs=(os.getpid(),),
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        except BrokenProcessPool:
            # A helper died (OOM killer, a signal): the caller retries; start afresh then.
            log.error("a helper process died; the pool starts again on the next call")
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            raise

    async def on_stop(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def start_helper(parent: int) -> None:
    """A helper process's start: it exits with the worker; its collector is set as the worker's."""
    exit_with_parent(parent)
    collector.tune()


def exit_with_parent(parent: int) -> None:
    """In a child process: exit when the worker is gone (a SIGKILL leaves no one to stop us)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
