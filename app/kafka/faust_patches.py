"""Every place this service reaches into Faust's or aiokafka's private parts, in one module.

The patches themselves are here: the stream iterator switch, the current-event
setter for table writes in a batch, the producer buffer's size, the settings Faust
reads per message (:func:`read_settings_once`), and the record agent's batching
(:func:`take_batches`: the stream's queue drained a batch at a time).
The consumer's offset fixes (and its running on the worker's event loop) are subclasses of
Faust's aiokafka driver (app/kafka/transport.py, its docstring numbers them 1 to 8); the
private names they override or read are listed here too, so that :func:`check_faust_internals`
covers them.

Each is written for the pinned versions (:data:`PINNED`). A Faust or aiokafka upgrade
that renames one of them would not fail: the fix would silently stop working (the
worst case, fix 1, acks skipped messages again). :func:`install` therefore checks
the versions and every name first, and refuses to start with one line naming what
changed. After an upgrade, reread the upstream issues cited below, rerun
tests/integration/test_recording_crashes.py and bench/staging, then move the pins.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from faust import streams as faust_streams
from faust.transport.producer import ProducerBuffer
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
    # read_settings_once: the buffer's size and put read a setting per message; its queue.
    ("faust.transport.producer", "ProducerBuffer", "size"),
    ("faust.transport.producer", "ProducerBuffer", "put"),
    ("faust.transport.producer", "ProducerBuffer", "pending"),
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
    # take_batches: the stream's own queue, drained a batch at a time.
    ("faust.channels", "Channel", "queue"),
    # ConsumerThread (app/kafka/transport.py): a failed group join is retried, not fatal.
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_fetch_records"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_coordinator"),
    ("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_coordination_task"),
    # app/instruments.py LeanMonitor: the samples a rebalance drops (not in multiprocess mode).
    ("faust.sensors.prometheus", "PrometheusMonitor", "_clear_partition_related_metrics"),
    # ConsumerThread runs on the worker's loop: mode's thread start, serve and sweep.
    ("mode.threads", "ServiceThread", "_serve"),
    ("mode.threads", "ServiceThread", "_thread_started"),
    ("mode.threads", "ServiceThread", "_thread_running"),
    ("mode.threads", "ServiceThread", "_gather_remaining_tasks"),
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


def read_settings_once(app: Any) -> None:
    """Read the two settings Faust looks up for every message once, at start.

    Faust's settings are descriptors behind a ``__getattribute__`` that records each
    access: about 2.5 µs a read. Per record it read ``conf.Event`` to build the event
    (``App.create_event``) and ``conf.producer_threaded`` twice to size the producer
    buffer (the conductor's "wait until the buffer ebbs" and our transport's hand-over
    check): ~7.5 µs of a staging row's 250-300 µs (counted over bench/staging). The
    buffer's ``put`` reads the flag too. Neither setting changes once the app is built.
    Apply after it is (the producer exists) and before its topics compile their decoders
    (they bind ``create_event``).
    """
    app.create_event = functools.partial(app.conf.Event, app)
    buffer = app.producer.buffer
    if not app.conf.producer_threaded and type(buffer) is ProducerBuffer:
        buffer.__class__ = _UnthreadedProducerBuffer


class _UnthreadedProducerBuffer(ProducerBuffer):
    """Faust's producer buffer with ``producer_threaded`` off, as read once at start."""

    @property
    def size(self) -> int:
        return len(self.pending._queue)  # type: ignore[attr-defined]  # as Faust's size reads it

    def put(self, fut: Any) -> None:
        self.pending.put_nowait(fut)


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[EventT[Any]]]:
    """Batches of at most ``max_`` events, taken from the stream's queue a batch at a time.

    Faust's ``take_events`` runs its stream iterator once per event: an event-loop
    turn, the sensors, the processors and a hand-over into the batch for each one
    (with the fetch loop's race per record that a queue freed one slot at a time
    causes, about a tenth of a staging worker's CPU). Here the events the fetch loop has
    queued are taken together: the first is waited for (the stream stopping ends
    the wait; ``within`` only bounds each wait), then whatever is queued, then,
    after one turn for the fetch loop, whatever it queued meanwhile, until the
    batch holds ``max_`` or the queue stays empty. A lone record goes at once, and
    under load the records that arrive while a batch is recorded form the next one
    (group commit). The queue freed by a batch lets the fetch loop hand over the
    next records without waiting, instead of one slot per event.

    What Faust's iterator does per event is kept: an event of a stopped flow or of
    an older consumer generation is dropped (fetched again after the rebalance, as
    Faust skips it), and each event is tracked as taken and not yet acked (the
    graceful shutdown waits for those; so does transport's stall check) and counted
    in. The stream's own acks are off: each event must be acked (``stream.ack``)
    once handled, which may be after later batches were taken (the record agent
    overlaps two). An event never acked is delivered again after a restart or a
    rebalance. faust-streaming has no batch hand-over from a channel (0.15.3).
    """
    app = stream.app
    consumer = app.consumer
    queue = stream.channel.queue  # the stream's buffer, filled by the conductor
    queued = queue.qsize
    get_nowait = queue.get_nowait
    flow_active = app.flow_control.is_active
    acks_enabled_for = app.topics.acks_enabled_for
    batch: list[EventT[Any]] = []

    def take(item: Any) -> None:
        if not isinstance(item, EventT):
            return  # only events reach a topic's stream; nothing to ack
        message = item.message
        if not flow_active() or message.generation_id != app.consumer_generation_id:
            return  # as Faust's stream skips it; it is fetched again after the rebalance
        if not message.tracked and acks_enabled_for(message.topic):
            message.tracked = True
            consumer.track_message(message)
        batch.append(item)

    stream.enable_acks = False  # the caller acks each event once it is handled
    while not stream.should_stop:
        if not queued():
            waited = await stream.wait(queue.get(), timeout=within)
            if waited.stopped:
                continue  # stopped, or nothing within ``within``: look again
            take(waited.result)
        while len(batch) < max_:
            for _ in range(min(queued(), max_ - len(batch))):
                take(get_nowait())
            if len(batch) >= max_:
                break
            await asyncio.sleep(0)  # the fetch loop may be handing over more right now
            if not queued():
                break
        if batch:
            taken = list(batch)
            batch.clear()
            yield taken
