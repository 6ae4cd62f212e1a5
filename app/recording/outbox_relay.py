"""Publishing outbox rows a crash left unsent (docs/architecture.md, invariant 2).

The record agent writes one outbox row per batch (its events as arrays), publishes
the events right after the commit and then deletes the row: the outbox holds only
what Kafka may not have. If the worker dies in between, the row stays; this relay
sends its events with the same bytes (hence the same event_id) and deletes it.

A row is its worker's while the worker holds its lease (``leased_until``, renewed
while it publishes, app/recording/payment_store.py; NULL: until ``created_at`` plus the
lease): the relay takes only rows whose lease ran out, so events are never sent
twice by a live fast path and the relay. Events are keyed by loan account, and an
account's events must keep their order: a row that shares a key with an earlier
row the relay cannot take yet (held, or itself held back) waits for it. One relay
runs at a time (an advisory lock), so two workers cannot interleave an account's
rows either.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from app.kafka.publisher import Message
from app.recording import payment_store

log = logging.getLogger(__name__)

#: Outbox rows (agent batches, up to RECORD_BATCH_SIZE events each) per transaction.
RELAY_BATCH = 10

#: Rows looked at per transaction to find RELAY_BATCH that may go.
CANDIDATE_PAGE = 100


def free_in_order(candidates: Sequence[Mapping[str, Any]], limit: int) -> list[Any]:
    """The batch ids that may go now, oldest first: no key of theirs waits in an earlier row.

    ``candidates`` are rows whose lease ran out, oldest first; ``behind_held`` says an
    earlier row still held shares a key. A row held back holds back its keys in turn.
    """
    waiting: dict[str, set[bytes]] = defaultdict(set)
    free = []
    for row in candidates:
        keys = set(row["message_keys"])
        blocked = waiting[row["topic"]]
        if row["behind_held"] or keys & blocked:
            blocked |= keys
            continue
        free.append(row["batch_id"])
        if len(free) == limit:
            break
    return free


class OutboxRelay:
    """Sends what the outbox holds unsent; :meth:`relay` is the timer's body."""

    def __init__(self, pool: asyncpg.Pool, publisher: Any, *, lease_seconds: float) -> None:
        self.pool = pool
        self.publisher = publisher
        self.lease_seconds = lease_seconds

    async def relay(self) -> int:
        """Relay outbox rows until none is left; return how many events were sent."""
        sent = 0
        while True:
            count = await self.relay_once()
            if count == 0:
                break
            sent += count
        if sent:
            log.warning("outbox relay: published %d events a crash had left unsent", sent)
        return sent

    async def relay_once(self) -> int:
        """Send the events of up to RELAY_BATCH outbox rows; return how many events."""
        async with self.pool.acquire() as connection, connection.transaction():
            if not await payment_store.take_relay_lock(connection):
                return 0  # another worker's relay is at it
            candidates = await payment_store.unleased_outbox(
                connection, self.lease_seconds, CANDIDATE_PAGE
            )
            chosen = free_in_order(candidates, RELAY_BATCH)
            if not chosen:
                return 0
            rows = await payment_store.take_outbox(connection, self.lease_seconds, chosen)
            if not rows:
                return 0
            by_topic: dict[str, list[Message]] = defaultdict(list)
            for row in rows:
                by_topic[row["topic"]] += zip(row["message_keys"], row["payloads"], strict=True)
            for topic, messages in by_topic.items():
                await self.publisher.publish(topic, messages)
            await payment_store.delete_outbox(connection, [row["batch_id"] for row in rows])
        return sum(len(messages) for messages in by_topic.values())
