"""The cyclic garbage collector, set for processes that keep tens of thousands of objects in flight.

CPython frees an object as soon as its last reference goes; the cyclic collector
(``gc``) is there for groups of objects that refer to one another. At its defaults
it makes a young pass every 700 new container objects and promotes whatever
survives, and a worker always holds tens of thousands in flight (records buffered
for the record agent, a batch in hand, its rows and events): nearly every pass finds
them alive, they reach the oldest generation, and full passes over the whole heap
follow (~200,000 objects, ~120 ms each). In bench/staging (one worker, 150,000
rows) the collector took 7.6 s of the worker's 35.5 s of CPU (21%) and found 1,700
objects in cycles in all: what the service allocates per record is freed by
reference counting, not by the collector.

So each process of the service (the worker, its webhook fronts, the staging
helper) calls :func:`tune` once it has started:

1. what exists then is frozen (``gc.freeze``): modules, models, the app and its
   services are never scanned again;
2. a thread of its own collects in full every COLLECT_EVERY_SECONDS (the pass holds
   the GIL: a pause of tens of milliseconds every few seconds, timed in
   ``payments_gc_pause_seconds``);
3. the automatic collector stays as a backstop only, after YOUNG_BACKSTOP new
   container objects, should something pile up cycles faster than the clock collects
   them. A pass that finds more than CYCLES_WARNING objects in cycles says so.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

from app.instruments import GC_PAUSE_SECONDS

log = logging.getLogger(__name__)

#: How often the full collection runs.
COLLECT_EVERY_SECONDS = 10.0
#: New container objects (allocated less freed) after which CPython collects anyway.
YOUNG_BACKSTOP = 1_000_000
#: Objects found in cycles by one pass above which it is logged as a warning.
CYCLES_WARNING = 100_000


def tune(
    every: float = COLLECT_EVERY_SECONDS, collect: Callable[[], int] = gc.collect
) -> threading.Event:
    """Freeze what exists, make the automatic collector a backstop, collect on a clock.

    Returns the event that stops the clock (tests; a process just exits).
    """
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_BACKSTOP)
    stop = threading.Event()
    threading.Thread(
        target=_collect_every, args=(every, collect, stop), name="gc-clock", daemon=True
    ).start()
    return stop


def _collect_every(every: float, collect: Callable[[], int], stop: threading.Event) -> None:
    while not stop.wait(every):
        started = time.perf_counter()
        found = collect()
        pause = time.perf_counter() - started
        GC_PAUSE_SECONDS.observe(pause)
        if found > CYCLES_WARNING:
            log.warning(
                "the garbage collector found %d objects in reference cycles in %.0f s "
                "(%.0f ms to collect): something keeps creating cycles; memory may grow "
                "between collections",
                found,
                every,
                pause * 1000,
            )
