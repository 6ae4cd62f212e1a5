"""The one failure policy of the record agent and the staging poller.

Every error is one of three kinds, decided here:

- an **outage** (Postgres or Kafka away, a timeout: :func:`app.storage.database.is_retriable`)
  is retried with backoff for as long as it lasts; the batch waits, nothing is skipped;
- a **property of the record** (too large for the broker, nested too deep to
  parse, a value that overflows) fails the same way every time: the record is
  isolated at once and dead-lettered;
- an error **nobody foresaw** is retried a few times (it may have been a fluke),
  then the batch is split in halves until the record that keeps failing is alone;
  that record is dead-lettered as ``unprocessable`` and the rest is handled.

:func:`settle` applies the policy to a batch; the callers say what handling a
batch and dead-lettering one record mean for them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from asyncpg.exceptions._base import DataError as QueryArgumentError

from app.storage.database import is_retriable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Attempts at a batch (and at a lone record) that failed for a reason nobody foresaw.
UNFORESEEN_ATTEMPTS = 3

#: Backoff between attempts: first pause, doubled each time up to the ceiling.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0

#: Errors that a record causes by what it is: retrying it cannot help.
RECORD_ERRORS: tuple[type[BaseException], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    RecursionError,
    OverflowError,
    # asyncpg's own "invalid input for query argument" (an InterfaceError, which
    # is_retriable counts as an outage): a value of the record the driver cannot encode.
    QueryArgumentError,
)

Sleep = Callable[[float], Awaitable[None]]


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from (a PublishFailed wraps Kafka's error)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def is_record_error(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a property of the record, not of the moment."""
    return any(isinstance(cause, RECORD_ERRORS) for cause in _causes(exc))


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` is a server away or slow: the same work will succeed later."""
    kafka_away = isinstance(exc, KafkaError) and (
        exc.retriable or isinstance(exc, (KafkaConnectionError, KafkaTimeoutError))
    )
    return (is_retriable(exc) or kafka_away) and not is_record_error(exc)


def describe(exc: BaseException) -> str:
    """The error as a dead letter's details carry it: its type and message."""
    text = str(exc) or "(no message)"
    return f"{type(exc).__name__}: {text}"


async def retrying(
    what: str,
    operation: Callable[[], Awaitable[R]],
    *,
    attempts: int = 1,
    sleep: Sleep = asyncio.sleep,
) -> R:
    """Run ``operation``: outages for ever with backoff, anything else up to ``attempts`` times.

    A record error is raised at once, whatever ``attempts`` says.
    """
    pause = RETRY_FIRST_SECONDS
    unforeseen = 0
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_outage(exc):
                unforeseen += 1
                if unforeseen >= attempts or is_record_error(exc):
                    raise
            log.warning("%s failed (attempt %d), retrying in %.1f s: %r", what, attempt, pause, exc)
            await sleep(pause)
            pause = min(pause * 2, RETRY_MAX_SECONDS)


async def settle(
    what: str,
    items: Sequence[T],
    handle: Callable[[Sequence[T]], Awaitable[R]],
    dead_letter: Callable[[T, BaseException], Awaitable[R]],
    *,
    sleep: Sleep = asyncio.sleep,
) -> list[R]:
    """Handle ``items`` as one batch if it can be; else isolate and dead-letter what fails.

    Returns the results of every ``handle`` and ``dead_letter`` call, in the order
    of the items they covered: one result when the batch went through whole.
    Outages inside are waited out; ``dead_letter`` must not fail for the record.
    """
    return await _settle(what, items, handle, dead_letter, sleep, UNFORESEEN_ATTEMPTS)


async def _settle(
    what: str,
    items: Sequence[T],
    handle: Callable[[Sequence[T]], Awaitable[R]],
    dead_letter: Callable[[T, BaseException], Awaitable[R]],
    sleep: Sleep,
    attempts: int,
) -> list[R]:
    try:
        return [await retrying(what, lambda: handle(items), attempts=attempts, sleep=sleep)]
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if len(items) == 1:
            log.error(
                "%s: one record keeps failing (%s); dead-lettering it and going on. "
                "Read its dead letter's details, fix the cause, then replay it",
                what,
                describe(exc),
                exc_info=exc,
            )
            return [await dead_letter(items[0], exc)]
        log.warning(
            "%s: a batch of %d keeps failing (%s); splitting it to find the record at fault",
            what,
            len(items),
            describe(exc),
        )
    middle = len(items) // 2
    results: list[R] = []
    for half in (items[:middle], items[middle:]):
        # A half is tried once (its batch failed several times already); a lone
        # record gets every attempt again before it is dead-lettered.
        tries = UNFORESEEN_ATTEMPTS if len(half) == 1 else 1
        results += await _settle(what, half, handle, dead_letter, sleep, tries)
    return results
