"""The record agent's Postgres work for one small batch, alone: wall time and CPU per batch.

At 200 webhooks/s the agent's batches hold 2-4 records, and each costs a fixed number of
Postgres round trips whatever its size: the batch's transaction (claim, retention
watermark, the payments, the outbox row) and the outbox delete once its events are out.
This times exactly that, through the service's own ``PaymentStore`` on the bench stack:
``--batches`` batches of ``--size`` new payments, one after another, after a warm-up.
It prints the median wall time per batch, the event loop's CPU per batch, and the bench
Postgres' CPU per batch (its postmaster's tree, backends included: ``bench/meter.py``),
then checks that every payment is recorded once and no outbox row is left.

Run it on the bench stack (``bench/record_batch`` brings it up); to compare two checkouts,
run each one's script in turn, several times, and compare the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.models import PaymentRecord
from app.recording.payment_store import PaymentStore
from app.settings import Settings
from app.storage.database import connect_pool
from bench.meter import Meter, stack_pids

WARM_UP = 50


def batch(prefix: str, number: int, size: int) -> list[PaymentRecord]:
    """``size`` new payments, as the agent decodes them from the intake."""
    when = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    return [
        PaymentRecord.model_validate(
            {
                "reference_number": f"{prefix}-{number:06d}-{n}",
                "loan_account_number": f"LA{number % 997:07d}",
                "cif": f"CIF{number % 991:07d}",
                "amount": "125.50",
                "payment_date": when,
                "payment_channel": "bank",
                "metadata": {"batch": number},
                "source": "webhook",
                "source_id": f"{number}-{n}",
                "received_at": datetime.now(UTC),
            }
        )
        for n in range(size)
    ]


async def main(batches: int, size: int, state: Path) -> None:
    settings = Settings()
    pool = await connect_pool(settings)
    store = PaymentStore(pool, settings.kafka_topic)
    prefix = f"RB{uuid.uuid4().hex[:8]}"
    prepared = [batch(prefix, number, size) for number in range(WARM_UP + batches)]
    for records in prepared[:WARM_UP]:
        result = await store.record(records)
        await store.mark_sent(result.outbox_batches)
    walls: list[float] = []
    outbox: list[uuid.UUID] = []
    postgres = stack_pids(state)["postgres"]
    with Meter({"postgres": [postgres]}, interval=0.05) as meter:
        # The event loop's thread alone: the meter samples from a thread of its own.
        started, cpu = time.time(), time.thread_time()
        for records in prepared[WARM_UP:]:
            clock = time.perf_counter()
            result = await store.record(records)
            await store.mark_sent(result.outbox_batches)
            walls.append(time.perf_counter() - clock)
            outbox += result.outbox_batches
        ended, cpu = time.time(), time.thread_time() - cpu
        meter.sample()
    server = meter.between(started, ended)["postgres"]
    recorded = await pool.fetchval(
        "SELECT count(*) FROM payment_service.payments WHERE reference_number LIKE $1",
        f"{prefix}-%",
    )
    left = await pool.fetchval(
        "SELECT count(*) FROM payment_service.outbox WHERE batch_id = ANY($1::uuid[])", outbox
    )
    await pool.close()
    expected = (WARM_UP + batches) * size
    print(
        f"{batches} batches of {size}: wall p50 {statistics.median(walls) * 1e3:.2f} ms, "
        f"client CPU {cpu / batches * 1e3:.2f} ms, Postgres CPU {server / batches * 1e3:.2f} ms "
        f"per batch; recorded {recorded} of {expected}, outbox rows left {left}"
    )
    if recorded != expected or left or len(outbox) != batches:
        raise SystemExit("check failed: not every payment recorded once, or outbox rows left")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--size", type=int, default=3, help="payments per batch")
    parser.add_argument("--state", type=Path, default=Path(".state/bench"), help="the stack's")
    options = parser.parse_args()
    asyncio.run(main(options.batches, options.size, options.state))
