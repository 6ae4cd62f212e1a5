"""The cyclic garbage collector, set for processes that keep tens of thousands of objects in flight.

CPython frees an object as soon as its last reference goes; the cyclic collector
(``gc``) is there for groups of objects that refer to one another. At its defaults
it makes a young pass every 700 new container objects (allocated less freed) and
promotes whatever survives, and a worker always holds tens of thousands in flight
(records buffered for the record agent, a batch in hand, its rows and events):
they survive the young passes, reach the oldest generation, and full passes over
the whole heap follow (~200,000 objects, mostly modules, models and the app, ~120
ms each). In bench/staging (one worker, 100,000 rows) the collector took 4.5 s of
the worker's 23 s of CPU, a fifth, and found ~46,000 objects in cycles, against
100,000 records and their rows and events: what the service allocates per record
is freed by reference counting, almost all of it.

So each process of the service (the worker, its webhook fronts, the staging
helper) calls :func:`tune` once it has started:

1. what exists then is frozen (``gc.freeze``): modules, models, the app and its
   services are never scanned again, and full passes cover only what came since;
2. the young generation holds YOUNG objects before a pass, about a record batch's
   worth, so a batch in flight is scanned once or twice, not promoted pass after
   pass. A young pass costs about a microsecond per object it holds: at most tens
   of milliseconds, most far less.

Cycles are still collected by the automatic collector, only less often: the same
bench spent ~0.4 s in it instead of 4.5 s, the start's own full pass included
(bench/README.md, "The garbage collector, frozen, with a larger young generation").
"""

from __future__ import annotations

import gc

#: New container objects (allocated less freed) that bring on a young pass (CPython: 700).
YOUNG = 50_000
#: Young passes per middle pass (CPython: 10).
MIDDLE = 20
#: Middle passes per full pass, if what is new is a quarter of what is old (CPython: 10).
OLD = 10


def tune() -> None:
    """Collect what is garbage now, freeze what is left, and set the generations' sizes."""
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
