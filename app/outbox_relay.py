"""Publishing outbox rows a crash left unsent (docs/architecture.md, invariant 2).

The record agent writes one outbox row per batch (its events as arrays), publishes
the events right after the commit and then deletes the row: the outbox holds only
what Kafka may not have. If the worker dies in between, the row stays; this relay
sends its events with the same bytes (hence the same event_id) and deletes it. It
leaves young rows alone, since those are normally the agent's own and in flight.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import asyncpg

from app.payment_store import MARK_SENT
from app.publisher import Message

log = logging.getLogger(__name__)

CLAIM_UNSENT = """
SELECT batch_id, topic, message_keys, payloads
FROM payment_service.outbox
WHERE created_at < now() - make_interval(secs => $1)
ORDER BY created_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

#: Outbox rows (agent batches, up to RECORD_BATCH_SIZE events each) per transaction.
RELAY_BATCH = 10


class OutboxRelay:
    """Sends what the outbox holds unsent; :meth:`relay` is the timer's body."""

    def __init__(self, pool: asyncpg.Pool, publisher: Any, *, min_age_seconds: float) -> None:
        self.pool = pool
        self.publisher = publisher
        self.min_age_seconds = min_age_seconds

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
            rows = await connection.fetch(CLAIM_UNSENT, self.min_age_seconds, RELAY_BATCH)
            if not rows:
                return 0
            by_topic: dict[str, list[Message]] = defaultdict(list)
            for row in rows:
                by_topic[row["topic"]] += zip(row["message_keys"], row["payloads"], strict=True)
            for topic, messages in by_topic.items():
                await self.publisher.publish(topic, messages)
            await connection.execute(MARK_SENT, [row["batch_id"] for row in rows])
        return sum(len(messages) for messages in by_topic.values())
