"""A probe's result kept a moment, fetched once however many callers ask at once.

``/health`` and ``/metrics`` are open to anyone who can reach the port, and each
answer ran queries: the staging backlog's ``count(*)``, catalog reads, Kafka
metadata. A flood of probes then became a flood of queries on the very
dependencies being probed. A :class:`Recent` answers from a result younger than
``PROBE_CACHE_SECONDS``; past that the first caller fetches a new one and every
caller arriving meanwhile waits for that same fetch (no thundering herd). Each
fetch counts in ``payments_probe_runs_total``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from app.instruments import PROBE_RUNS

T = TypeVar("T")


class Recent(Generic[T]):
    """The last result of a probe named ``name``, reused for ``max_age`` seconds."""

    def __init__(
        self, name: str, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.max_age = max_age
        self._clock = clock
        self._last: tuple[T, float] | None = None  # the result and when it came
        self._fetching: asyncio.Task[tuple[T, float]] | None = None

    async def get(self, fetch: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        """The result and its age in seconds: the kept one while young enough, else a new one.

        ``fetch`` runs only when a new result is needed and no other caller's fetch
        is under way; its exception reaches every caller waiting for it, and
        nothing is kept.
        """
        last = self._last
        if last is not None and self._clock() - last[1] < self.max_age:
            return last[0], self._clock() - last[1]
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._refresh(fetch))
        # Shielded: a caller that goes away (a client hanging up) leaves the fetch to the others.
        value, at = await asyncio.shield(self._fetching)
        return value, self._clock() - at

    async def _refresh(self, fetch: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        PROBE_RUNS.labels(self.name).inc()
        try:
            self._last = (await fetch(), self._clock())
            return self._last
        finally:
            self._fetching = None
