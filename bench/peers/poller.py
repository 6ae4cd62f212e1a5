"""The peers' staging poller: claim 1,000 rows, check them, publish them, mark them processed.

``python -m bench.peers.poller --kafka HOST:PORT --dsn postgresql://...`` (both peers run
this one; plain asyncio, aiokafka and asyncpg). A claim stays locked (``FOR UPDATE SKIP
LOCKED``) until the broker has acknowledged every record of it (idempotent, acks=all), then
its rows are marked processed and the batch logged in the same transaction. It polls until
it is stopped (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.peers.job import (
    CLAIM_ROWS,
    CLAIM_SIZE,
    DLQ,
    INTAKE,
    LOG_BATCH,
    MARK_PROCESSED,
    check_row,
    encode_dead_letter,
    encode_intake,
)


async def claim_once(connection: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
    """One claimed batch published and marked processed; how many rows it held."""
    async with connection.transaction():
        started = datetime.now(UTC).replace(tzinfo=None)
        rows = await connection.fetch(CLAIM_ROWS, CLAIM_SIZE)
        if not rows:
            return 0
        now = datetime.now(UTC).replace(tzinfo=None)
        sends = []
        errors = 0
        for row in rows:
            problem = check_row(row, now)
            key = row["reference_number"].encode()
            if problem is None:
                sends.append(await producer.send(INTAKE, encode_intake(row), key=key))
            else:
                errors += 1
                letter = encode_dead_letter(row, problem, now)
                sends.append(await producer.send(DLQ, letter, key=key))
        await asyncio.gather(*sends)  # every ack before the rows count as processed
        ids = [row["id"] for row in rows]
        await connection.execute(MARK_PROCESSED, ids)
        await connection.execute(
            LOG_BATCH, ids[0], ids[-1], len(rows), len(rows) - errors, errors, started
        )
        return len(rows)


async def poll(kafka: str, dsn: str) -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    connection = await asyncpg.connect(dsn)
    try:
        published = 0
        while not stopping.is_set():
            claimed = await claim_once(connection, producer)
            published += claimed
            if not claimed:
                # The backlog is empty: look again in a second (or stop).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=1.0)
        print(f"poller: {published} rows claimed at {time.time():.3f}", flush=True)
    finally:
        await connection.close()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", required=True, help="bootstrap servers")
    parser.add_argument("--dsn", required=True, help="Postgres connection URL")
    args = parser.parse_args()
    asyncio.run(poll(args.kafka, args.dsn))


if __name__ == "__main__":
    main()
