"""Every place this service reaches into Faust's or aiokafka's private parts, in one module.

The patches themselves are here: the stream iterator switch, the current-event
setter for table writes in a batch, the producer buffer's size, and the record
agent's batching (:func:`take_batches`, ``take_events`` without its idle wait). The consumer's
offset fixes are subclasses of Faust's aiokafka driver (app/kafka/transport.py, its
docstring numbers them 1 to 8); the private names they override or read are listed
here too, so that :func:`check_faust_internals` covers them.

Each is written for the pinned versions (:data:`PINNED`). A Faust or aiokafka upgrade
that renames one of them would not fail: the fix would silently stop working (the
worst case, fix 1, acks skipped messages again). :func:`install` therefore checks
the versions and every name first, and refuses to start with one line naming what
changed. After an upgrade, reread the upstream issues cited below, rerun
tests/integration/test_recording_crashes.py and bench/staging, then move the pins.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from faust import streams as faust_streams
from faust.types import EventT

from app.exceptions import PaymentsError

#: The versions the patches below were written and tested against (requirements.lock).
PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

#: (module, class or "" for the module itself, private name). Each is overridden, read or
#: set by a patch here or by app/kafka/transport.py; the comment says which and why.
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    # route_acks_through_the_consumer: the Cython stream iterator's switch.
    ("faust.streams", "", "_CStreamIterator"),
    # event_context: Faust's current event, which picks a table write's partition.
    ("faust.streams", "", "_current_event"),
    # The app builds our transport (app/service.py).
    ("faust.app.base", "App", "_new_transport"),
    # widen_producer_buffer: the buffer that stalls every incoming message when full.
    ("faust.transport.producer", "ProducerBuffer", "max_messages"),
    # Fix 1 to 8 (app/kafka/transport.py): Faust's consumer bookkeeping, overridden or read.
    ("faust.transport.consumer", "ThreadDelegateConsumer", "_new_consumer_thread"),
    ("faust.transport.consumer", "Consumer", "_drain_messages"),
    ("faust.transport.consumer", "Consumer", "_new_offset"),
    ("faust.transport.consumer", "Consumer", "_add_gap"),
    ("faust.transport.consumer", "Consumer", "_committed_offset"),
    ("faust.transport.consumer", "Consumer", "_read_offset"),
    ("faust.transport.consumer", "Consumer", "_acked"),
    ("faust.transport.consumer", "Consumer", "_n_acked"),
    ("faust.transport.consumer", "Consumer", "_commit_every"),
    ("faust.transport.consumer", "Consumer", "_unacked_messages"),
    ("faust.transport.consumer", "Consumer", "_paused_partitions"),
    ("faust.transport.conductor", "Conductor", "_tp_index"),
    ("mode.services", "Service", "_stopped"),
    # take_batches: the stream drained in the background into our processor, as
    # Stream.take_events does it; and the stream's own queue, to see it empty.
    ("faust.streams", "Stream", "_enable_passive"),
    ("faust.channels", "Channel", "queue"),
    # ConsumerThread (app/kafka/transport.py): a failed group join is retried, not fatal.
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_fetch_records"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_coordinator"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_coordination_task"),
    # app/instruments.py LeanMonitor: the samples a rebalance drops (not in multiprocess mode).
    ("faust.sensors.prometheus", "PrometheusMonitor", "_clear_partition_related_metrics"),
)


class FaustInternalsChanged(PaymentsError):
    """Faust or aiokafka is not the version our patches were written for; pin it back."""


def install() -> None:
    """Check the pinned versions and every private name, then apply the global patches.

    Called once per app (app/service.py); applying twice is harmless.
    """
    check_faust_internals()
    route_acks_through_the_consumer()


def check_faust_internals(
    pinned: dict[str, str] = PINNED,
    names: tuple[tuple[str, str, str], ...] = PRIVATE_NAMES,
) -> None:
    """Raise :class:`FaustInternalsChanged` (one line) unless versions and names are as pinned."""
    for package, wanted in pinned.items():
        try:
            found = metadata.version(package)
        except metadata.PackageNotFoundError:
            found = "none"
        if found != wanted:
            raise FaustInternalsChanged(
                f"{package} is {found}, but app/kafka/faust_patches.py was written for "
                f"{wanted}: pin {package}=={wanted} or recheck every patch there"
            )
    for module_name, class_name, name in names:
        if not _exists(module_name, class_name, name):
            where = f"{module_name}.{class_name}" if class_name else module_name
            raise FaustInternalsChanged(
                f"{where} has no {name} any more: the patch of app/kafka/faust_patches.py "
                "that touches it would silently do nothing; recheck it before starting"
            )


def _exists(module_name: str, class_name: str, name: str) -> bool:
    """Whether ``name`` is a module global, a class attribute, or set on instances."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return False
    if not class_name:
        return name in vars(module)
    owner = getattr(module, class_name, None)
    if not inspect.isclass(owner):
        return False
    if hasattr(owner, name):
        return True
    # An instance attribute: assigned (``self.name =``) or declared (``name:``) in a class body.
    for cls in owner.__mro__:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        if f"self.{name} =" in source or f"self.{name}: " in source or f"    {name}: " in source:
            return True
    return False


def route_acks_through_the_consumer() -> None:
    """Make every ack go through ``Consumer.ack`` (fix 1 of app/kafka/transport.py needs it).

    Faust's Cython stream iterator inlines the consumer's ack bookkeeping, so an
    override of ``Consumer.ack`` never sees the acks of skipped messages; with it, a
    second worker joining the group lost thousands of records (bench/staging
    --workers 2). The pure-Python iterator calls ``Consumer.ack``. ``__aiter__`` reads
    this module global on every call, so clearing it switches every stream. (Upstream
    has no issue for this; the two iterators are known to differ, faust-streaming #607.)
    """
    faust_streams._CStreamIterator = None  # type: ignore[attr-defined]  # private switch, see above


@contextmanager
def event_context(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the current event while writing a table.

    A table write goes to the changelog partition (and the RocksDB partition) of
    the *current event*. Inside a ``take_events`` batch Faust does not set one per
    event ("Cannot modify table key from outside of stream iteration",
    faust-streaming #497), and a batch mixes partitions, so each write names its own
    event. faust-streaming has no public setter for this (0.15.3).
    """
    current = faust_streams._current_event  # no public setter (see above)
    token = current.set(weakref.ref(event))
    try:
        yield
    finally:
        current.reset(token)


def widen_producer_buffer(app: Any, max_messages: int) -> None:
    """Let Faust's producer buffer hold ``max_messages`` before it stalls the consumer.

    Each table write queues a changelog record in Faust's producer buffer, and Faust
    stalls *every incoming message* while that buffer holds more than max_messages
    (100; "producer buffer full", faust-streaming #173). A batch of the record agent
    writes a key per record at once.
    """
    app.producer.buffer.max_messages = max_messages


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[EventT[Any]]]:
    """Batches of at most ``max_`` events: Faust's ``take_events``, minus its idle wait.

    ``take_events`` hands over a batch when it is full or ``within`` seconds after it
    began, so a lone record (a webhook on a quiet service) waits the whole window
    for company that is not coming. Here a batch also goes as soon as the stream's
    queue is empty once the fetch loop has had a turn: whatever arrives while a
    batch is being recorded waits in the queue and forms the next one (group
    commit), so batches grow with the load and a lone record goes at once.

    Acks are the caller's: the stream's own acks are off, and each event must be
    acked (``stream.ack``) once handled, which may be after later batches were
    taken (the record agent overlaps two). An event never acked is delivered
    again after a restart or a rebalance. faust-streaming has no hook to change
    ``take_events``' wait (0.15.3). Nothing is added to a batch from the moment it
    is handed over until the next one is asked for.
    """
    events: list[EventT[Any]] = []
    ready = asyncio.Event()
    free = asyncio.Event()  # set while the collector may add to the batch
    free.set()
    queue = stream.channel.queue

    async def collect(value: Any) -> Any:
        await free.wait()
        event = stream.current_event
        if event is None:
            raise RuntimeError("take_batches: a value without its event")
        events.append(event)
        if len(events) < max_ and queue.empty():
            await asyncio.sleep(0)  # the fetch loop may be handing over more right now
        if len(events) >= max_ or queue.empty():
            free.clear()
            ready.set()
        return value

    stream.enable_acks = False  # the caller acks each event once it is handled
    stream.add_processor(collect)
    stream._enable_passive(stream.channel)  # drain the stream into collect (see above)
    while not stream.should_stop:
        await stream.wait_for_stopped(ready, timeout=within)
        if not events:
            continue
        free.clear()  # a batch that waited out ``within`` is closed here
        batch = list(events)
        try:
            yield batch
        finally:
            events.clear()
            ready.clear()
            free.set()
