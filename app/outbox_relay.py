"""Publishing outbox rows a crash left unsent (DESIGN.md invariant 2).

The record agent publishes its events right after the commit and then deletes
their outbox rows: the outbox holds only what Kafka may not have. If the worker
dies in between, the rows stay; this relay sends them with the same bytes (hence
the same event_id) and deletes them. It leaves young rows alone, since those are
normally the agent's own and in flight.
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
SELECT event_id, topic, message_key, payload::text AS payload
FROM payment_service.outbox
WHERE created_at < now() - make_interval(secs => $1)
ORDER BY created_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

RELAY_BATCH = 1000


class OutboxRelay:
    """Sends what the outbox holds unsent; :meth:`relay` is the timer's body."""

    def __init__(self, pool: asyncpg.Pool, publisher: Any, *, min_age_seconds: float) -> None:
        self.pool = pool
        self.publisher = publisher
        self.min_age_seconds = min_age_seconds

    async def relay(self) -> int:
        """Relay batches until none is left; return how many events were sent."""
        sent = 0
        while True:
            count = await self.relay_once()
            sent += count
            if count < RELAY_BATCH:
                break
        if sent:
            log.warning("outbox relay: published %d events a crash had left unsent", sent)
        return sent

    async def relay_once(self) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(CLAIM_UNSENT, self.min_age_seconds, RELAY_BATCH)
            if not rows:
                return 0
            by_topic: dict[str, list[Message]] = defaultdict(list)
            for row in rows:
                by_topic[row["topic"]].append(
                    (row["message_key"].encode(), row["payload"].encode())
                )
            for topic, messages in by_topic.items():
                await self.publisher.publish(topic, messages)
            await connection.execute(MARK_SENT, [row["event_id"] for row in rows])
        return len(rows)
