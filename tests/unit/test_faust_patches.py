"""The start-up check of app/kafka/faust_patches.py: pinned versions, every private name."""

from __future__ import annotations

from typing import Any

import faust
import pytest

from app.kafka import faust_patches
from app.kafka.faust_patches import FaustInternalsChanged, check_faust_internals


def test_the_installed_versions_have_every_name_the_patches_touch() -> None:
    check_faust_internals()


def test_another_faust_version_is_refused_in_one_line() -> None:
    with pytest.raises(FaustInternalsChanged) as refused:
        check_faust_internals(pinned={"faust-streaming": "0.0.1"}, names=())
    message = str(refused.value)
    assert "\n" not in message
    assert "faust-streaming is 0.15.3" in message
    assert "faust-streaming==0.0.1" in message


@pytest.mark.parametrize(
    ("module", "owner", "name"),
    [
        ("faust.streams", "", "_CStreamIteratorRenamed"),
        ("faust.transport.consumer", "Consumer", "_new_offset_renamed"),
        ("faust.transport.consumer", "NoSuchClass", "_acked"),
        ("faust.no_such_module", "", "anything"),
    ],
)
def test_a_renamed_private_name_is_refused_in_one_line(module: str, owner: str, name: str) -> None:
    with pytest.raises(FaustInternalsChanged) as refused:
        check_faust_internals(pinned={}, names=((module, owner, name),))
    assert "\n" not in str(refused.value)
    assert name in str(refused.value)


def test_instance_attributes_count_as_present() -> None:
    # Set in Consumer.__init__, not on the class: found in its source.
    check_faust_internals(pinned={}, names=(("faust.transport.consumer", "Consumer", "_acked"),))


def test_install_switches_streams_to_the_python_iterator() -> None:
    faust_patches.install()
    assert faust_patches.faust_streams._CStreamIterator is None  # type: ignore[attr-defined]


async def test_settings_read_per_message_are_read_once() -> None:
    app = faust.App("settings-once", broker="kafka://127.0.0.1:1")
    faust_patches.read_settings_once(app)
    reads: list[str] = []
    registry = type(app.conf)
    original = registry.__getattribute__

    def counting(conf: Any, key: str) -> Any:
        if not key.startswith("_"):
            reads.append(key)
        return original(conf, key)

    buffer = app.producer.buffer
    message = faust.types.Message("t", 0, 0, 0.0, 0, None, b"k", b"v", None)
    registry.__getattribute__ = counting  # type: ignore[method-assign]
    try:
        event = app.create_event(b"k", b"v", {}, message)
        empty = buffer.size
        buffer.put(sentinel := object())  # type: ignore[arg-type]
        queued = buffer.size
    finally:
        registry.__getattribute__ = original  # type: ignore[method-assign]
    assert reads == []
    assert isinstance(event, faust.Event)
    assert (event.app, event.key, event.value, event.message) == (app, b"k", b"v", message)
    assert (empty, queued) == (0, 1)
    assert buffer.pending.get_nowait() is sentinel


async def test_a_threaded_producer_buffer_is_left_as_faust_built_it() -> None:
    app = faust.App("threaded", broker="kafka://127.0.0.1:1", producer_threaded=True)
    built = type(app.producer.buffer)
    try:
        faust_patches.read_settings_once(app)
        assert type(app.producer.buffer) is built
    finally:
        app.producer.threaded_producer.thread_loop.close()  # type: ignore[union-attr]  # its own loop
