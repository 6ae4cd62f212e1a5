"""Bad data on the real stack: one poison record or row never holds the pipeline behind it."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from app.kafka.codecs import DEAD_LETTER_MAX_BYTES, decode_dead_letter, encode_record
from app.kafka.publisher import Publisher
from app.kafka.topics import DLQ, INTAKE, INTAKE_PARTITIONS
from app.models import DeadLetter, PaymentRecord
from tests.pipeline import (
    app_env,
    assert_recorded_once,
    fetch,
    read_records,
    stage,
    wait_consumed,
    wait_drained,
)
from tests.stack import Stack, Worker, run_worker, wait_for
from tests.webhook_client import signed

#: Converted to UTC, this payment_date falls in year 0 (it made the agent loop for ever).
OVERFLOWING_DATE = "0001-01-01T00:00:00+14:00"


def _partition(reference: str) -> int:
    everyone = list(range(INTAKE_PARTITIONS))
    return int(DefaultPartitioner()(reference.encode(), everyone, everyone))


def _same_partition(prefix: str, partition: int, count: int) -> list[str]:
    """``count`` references whose key lands on ``partition``, as the producer partitions them."""
    found: list[str] = []
    number = 0
    while len(found) < count:
        reference = f"{prefix}-{number:05d}"
        if _partition(reference) == partition:
            found.append(reference)
        number += 1
    return found


def _record(reference: str, number: int) -> PaymentRecord:
    return PaymentRecord(
        reference_number=reference,
        loan_account_number=f"LA-{number}",
        cif="CIF-1",
        amount=Decimal("10.00") + number,
        payment_date=datetime.now(UTC) - timedelta(days=1),
        source="webhook",
        source_id=f"wh-{reference}",
        received_at=datetime.now(UTC),
    )


async def _publish(stack: Stack, messages: list[tuple[bytes, bytes]], partition: int) -> None:
    publisher = Publisher(stack.settings())
    await publisher.start()
    try:
        await publisher.publish(INTAKE, messages, partitions=[partition] * len(messages))
    finally:
        await publisher.stop()


def _letters(stack: Stack) -> dict[str | None, DeadLetter]:
    records = asyncio.run(read_records(stack, DLQ))
    assert all(len(m.value or b"") <= DEAD_LETTER_MAX_BYTES for m in records)
    return {
        letter.reference_number: letter
        for letter in (decode_dead_letter(m.value or b"") for m in records)
    }


def _recorded(stack: Stack) -> set[str]:
    rows = fetch(stack, "SELECT reference_number FROM payment_service.payments")
    return {row["reference_number"] for row in rows}


def test_a_poison_intake_record_is_dead_lettered_and_the_records_behind_it_recorded(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    # Nothing real fails unforeseen in the agent once dates are checked, so the
    # test-only FAULT_POINT=poison_record makes every batch holding a POISON- reference fail.
    poison = f"POISON-{run}"
    partition = _partition(poison)
    good = _same_partition(f"GOOD-{run}", partition, 20)
    overflowing = json.loads(encode_record(_record(f"OLD-{run}", 0)))
    overflowing["payment_date"] = OVERFLOWING_DATE
    messages = [
        (poison.encode(), encode_record(_record(poison, 0))),
        (f"OLD-{run}".encode(), json.dumps(overflowing).encode()),
        *((ref.encode(), encode_record(_record(ref, n))) for n, ref in enumerate(good, 1)),
    ]
    with run_worker(stack, tmp_path, FAULT_POINT="poison_record", **app_env(run)) as worker:
        asyncio.run(_publish(stack, messages, partition))
        asyncio.run(wait_drained(stack, len(good), wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=60))
        # The partition is not held: later records are recorded too.
        later = _same_partition(f"LATER-{run}", partition, 3)
        asyncio.run(
            _publish(
                stack,
                [(ref.encode(), encode_record(_record(ref, n))) for n, ref in enumerate(later)],
                partition,
            )
        )
        total = len(good) + len(later)
        asyncio.run(wait_drained(stack, total, wait_seconds=60, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run, wait_seconds=60))

    assert _recorded(stack) == {*good, *later}
    letters = _letters(stack)
    assert set(letters) == {poison, f"OLD-{run}"}
    assert letters[poison].reason == "unprocessable"
    assert letters[poison].details[0].message.startswith("RuntimeError: FAULT_POINT poison_record")
    assert letters[poison].original["reference_number"] == poison
    assert letters[f"OLD-{run}"].reason == "invalid"
    assert [d.field for d in letters[f"OLD-{run}"].details] == ["payment_date"]
    assert_recorded_once(stack, run, len(good) + len(later))


def _row(reference: str, number: int, metadata: str = "{}") -> tuple[Any, ...]:
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    return (reference, f"LA-{number}", "CIF-1", Decimal("20.00") + number, now, "bank", metadata)


def test_a_staging_row_too_large_to_dead_letter_whole_never_holds_the_table(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    huge = json.dumps({"blob": "x" * (2 * 1024 * 1024)})
    deep = '{"a":' * 3000 + "1" + "}" * 3000
    first = [_row(f"S1-{run}-{n}", n) for n in range(5)]
    bad = [_row(f"HUGE-{run}", 90, huge), _row(f"DEEP-{run}", 91, deep)]
    after = [_row(f"S2-{run}-{n}", n) for n in range(5)]
    # One batch of 4 rows at a time: the bad rows share a batch with good ones, and
    # good batches come after them.
    asyncio.run(stage(stack, [*first, *bad, *after]))
    with run_worker(stack, tmp_path, STAGING_BATCH_SIZE="4", **app_env(run)) as worker:
        asyncio.run(wait_drained(stack, 10, wait_seconds=120, alive=worker.assert_alive))
        asyncio.run(wait_consumed(stack, run))
        # The poller keeps going: rows staged now are recorded too.
        asyncio.run(stage(stack, [_row(f"S3-{run}", 7)]))
        asyncio.run(wait_drained(stack, 11, wait_seconds=60, alive=worker.assert_alive))

    assert _recorded(stack) == {row[0] for row in (*first, *after, _row(f"S3-{run}", 7))}
    letters = _letters(stack)
    assert set(letters) == {f"HUGE-{run}", f"DEEP-{run}"}
    cut = letters[f"HUGE-{run}"]
    assert (cut.reason, cut.source) == ("invalid", "staging")
    assert cut.details[0].field == "metadata"
    assert cut.original is None
    assert cut.details[-1].field == "original"
    assert "sha256" in cut.details[-1].message
    deep_letter = letters[f"DEEP-{run}"]
    assert deep_letter.reason == "invalid"
    assert [d.field for d in deep_letter.details] == ["metadata"]
    processed = fetch(
        stack,
        "SELECT reference_number, processed FROM public.payment_staging "
        "WHERE reference_number = ANY($1)",
        [f"HUGE-{run}", f"DEEP-{run}"],
    )
    assert {row["reference_number"]: row["processed"] for row in processed} == {
        f"HUGE-{run}": True,
        f"DEEP-{run}": True,
    }
    # the staging row stays the full copy
    kept = fetch(
        stack,
        "SELECT octet_length(metadata::text) AS n FROM public.payment_staging "
        "WHERE reference_number = $1",
        f"HUGE-{run}",
    )
    assert kept[0]["n"] > 2 * 1024 * 1024
    assert_recorded_once(stack, run, 11)


SECRET = "whsec_" + "cG9pc29uIHJlY29yZHMgdGVzdCBzZWNyZXQhIQ=="
WEBHOOK = "/api/v1/payments/webhook"


def _notice(reference: str, **changes: Any) -> bytes:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": "150.25",
        "payment_date": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
    }
    return json.dumps(body | changes).encode()


def _answer(worker: Worker, body: bytes, webhook_id: str) -> tuple[int, Any]:
    status, _, raw = worker.post(WEBHOOK, body, signed(SECRET, body, msg_id=webhook_id))
    return status, json.loads(raw)


def test_poison_webhooks_get_a_4xx_and_the_webhooks_after_them_are_recorded(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    env = app_env(run, WEBHOOK_SECRET=SECRET, FAULT_POINT="poison_record")
    with run_worker(stack, tmp_path, **env) as worker:
        worker.wait_web()

        def decides() -> bool:
            warm = f"WARM-{run}-{uuid.uuid4().hex[:6]}"
            return _answer(worker, _notice(warm), warm)[0] == 201

        wait_for(decides, timeout=90, interval=1, what="synchronous answers")

        overflowing = _answer(worker, _notice(f"OLD-{run}", payment_date=OVERFLOWING_DATE), "w-old")
        poison = _answer(worker, _notice(f"POISON-{run}"), f"w-poison-{run}")
        good = [_answer(worker, _notice(f"W-{run}-{n}"), f"w-good-{run}-{n}") for n in range(5)]
        again = _answer(worker, _notice(f"POISON-{run}"), f"w-poison-{run}")

    assert overflowing[0] == 422
    assert [e["field"] for e in overflowing[1]["errors"]] == ["payment_date"]
    assert poison[0] == 422
    assert poison[1]["error"] == "unprocessable"
    assert poison[1]["errors"][0]["message"].startswith("RuntimeError: FAULT_POINT")
    assert again == poison  # the same answer for the same webhook-id
    assert [status for status, _ in good] == [201] * 5
    letters = _letters(stack)
    assert letters[f"POISON-{run}"].reason == "unprocessable"
    assert letters[f"POISON-{run}"].source_id == f"w-poison-{run}"
    assert {f"W-{run}-{n}" for n in range(5)} <= _recorded(stack)
