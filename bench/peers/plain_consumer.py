"""The plain asyncio peer's consumer: aiokafka and asyncpg, no framework.

``python -m bench.peers.plain_consumer --kafka HOST:PORT --dsn postgresql://... --group G``.
Takes what is fetched (up to 2,000 records), drops references a dict has seen, claims the rest
in ``payment_references`` (``ON CONFLICT DO NOTHING RETURNING``) and COPYs the new payments in
the same transaction, publishes one ``payment.recorded`` per new payment and commits the
offsets once the broker has acknowledged them all. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError

from bench.peers.job import (
    CLAIM_REFERENCES,
    EVENTS,
    INTAKE,
    PAYMENT_COLUMNS,
    encode_event,
    payment_row,
    references_columns,
    utc_text,
)

BATCH = 2000


async def record(
    connection: asyncpg.Connection,
    producer: AIOKafkaProducer,
    seen: set[str],
    records: list[dict[str, Any]],
) -> int:
    """Record what is new among ``records``; how many payments were new."""
    fresh: dict[str, dict[str, Any]] = {}
    for item in records:
        if item["reference_number"] not in seen:
            fresh.setdefault(item["reference_number"], item)
    if not fresh:
        return 0
    async with connection.transaction():
        claimed = await connection.fetch(
            CLAIM_REFERENCES, *references_columns(list(fresh.values()))
        )
        new = [fresh[row["reference_number"]] for row in claimed]
        if new:
            await connection.copy_records_to_table(
                "payments",
                schema_name="payment_service",
                columns=PAYMENT_COLUMNS,
                records=[payment_row(item) for item in new],
            )
    seen.update(fresh)
    recorded_at = utc_text(datetime.now(UTC))
    sends = []
    for item in new:
        key, value = encode_event(item, recorded_at)
        sends.append(await producer.send(EVENTS, value, key=key))
    await asyncio.gather(*sends)
    return len(new)


async def consume(kafka: str, dsn: str, group: str) -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    consumer = AIOKafkaConsumer(
        INTAKE,
        bootstrap_servers=kafka,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka, enable_idempotence=True, acks="all", linger_ms=5
    )
    await producer.start()
    await consumer.start()
    connection = await asyncpg.connect(dsn)
    seen: set[str] = set()
    created = 0
    try:
        while not stopping.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=BATCH)
            if not fetched:
                continue
            records = [json.loads(m.value) for batch in fetched.values() for m in batch]
            created += await record(connection, producer, seen, records)
            offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items()}
            # A rebalance may have taken the partitions: their next owner redoes the
            # records, and payment_references makes the repeats duplicates.
            with contextlib.suppress(CommitFailedError):
                await consumer.commit(offsets)
        print(f"consumer: {created} payments created", flush=True)
    finally:
        await connection.close()
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", required=True, help="bootstrap servers")
    parser.add_argument("--dsn", required=True, help="Postgres connection URL")
    parser.add_argument("--group", required=True, help="consumer group")
    args = parser.parse_args()
    asyncio.run(consume(args.kafka, args.dsn, args.group))


if __name__ == "__main__":
    main()
