"""A consumer group whose committed intake offset fell below the log start goes on.

The topic's retention (or an operator's ``kafka-delete-records``) can delete
records a group has not processed yet: a backlog older than the retention. The
committed offset is then below the log start. Before the fix the head-gap repair
sought back to it for ever and the partition never committed again.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from app.kafka.codecs import encode_record
from app.kafka.topics import INTAKE
from app.models import PaymentRecord
from tests.pipeline import app_env, fetch, wait_consumed
from tests.stack import Stack, run_worker, wait_for

PARTITION = TopicPartition(INTAKE, 0)


def _record(reference: str) -> PaymentRecord:
    return PaymentRecord.model_validate(
        {
            "reference_number": reference,
            "loan_account_number": "LA-RET",
            "cif": "CIF-RET",
            "amount": "12.50",
            "payment_date": datetime.now(UTC) - timedelta(days=1),
            "payment_channel": "bank_transfer",
            "source": "webhook",
            "source_id": reference,
            "received_at": datetime.now(UTC),
        }
    )


async def _produce(stack: Stack, references: list[str]) -> None:
    """Put records on intake partition 0 (whatever their key hashes to)."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for reference in references:
            await producer.send_and_wait(
                INTAKE,
                encode_record(_record(reference)),
                key=reference.encode(),
                partition=PARTITION.partition,
            )
    finally:
        await producer.stop()


async def _delete_before(stack: Stack, offset: int) -> int:
    """Move partition 0's log start to ``offset``, as retention would; the new log start."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    await admin.start()
    try:
        low = await admin.delete_records({PARTITION: RecordsToDelete(offset)})
        return low[PARTITION]
    finally:
        await admin.close()


def _recorded(stack: Stack) -> set[str]:
    rows = fetch(stack, "SELECT reference_number FROM payment_service.payments")
    return {row["reference_number"] for row in rows}


def test_a_commit_below_the_log_start_resumes_there_with_an_error(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    first = [f"RET-{run}-first-{n}" for n in range(5)]
    lost = [f"RET-{run}-lost-{n}" for n in range(10)]
    after = [f"RET-{run}-after-{n}" for n in range(5)]
    env = app_env(run)

    asyncio.run(_produce(stack, first))
    with run_worker(stack, tmp_path, **env) as worker:
        wait_for(lambda: _recorded(stack) == set(first), timeout=90, what="the first records")
        asyncio.run(wait_consumed(stack, run, wait_seconds=90))  # committed offset 5
        worker.assert_alive()

    # While no worker runs, 10 more records arrive and are deleted before anyone
    # reads them; then 5 more arrive behind the new log start.
    asyncio.run(_produce(stack, lost))
    assert asyncio.run(_delete_before(stack, 15)) == 15
    asyncio.run(_produce(stack, after))

    with run_worker(stack, tmp_path, **env) as worker:
        wait_for(lambda: _recorded(stack) >= set(after), timeout=90, what="the later records")
        asyncio.run(wait_consumed(stack, run, wait_seconds=90))  # committed offset 20
        assert _recorded(stack) == {*first, *after}
        assert worker.logged("records 5..14 were deleted by the topic's retention")
        worker.wait_web()

        def lost_counted() -> bool:
            status, body = worker.get("/metrics")
            return status == 200 and (
                f'payments_intake_records_lost_total{{topic="{INTAKE}"}} 10.0' in body.decode()
            )

        wait_for(lost_counted, timeout=30, what="the lost records counted in /metrics")
