"""The project's own per-row code on the staging path, offline: CPU µs per row, stage by stage.

No Kafka, Postgres or Faust's worker: the functions a staged row goes through in the
poller (in the worker, the default) and the record agent (the references table on a real RocksDB
store in a temporary folder, its changelog sends left out), on 1,000 rows, the median of
15 passes (after 3 to warm up) by ``time.process_time``. Far steadier than
``bench/staging`` on a shared machine, so it can tell levers of a few µs apart (issue
18); it does not see the rest of Faust, the clients or the servers. To compare two
checkouts, run it from each::

    cd <checkout> && PYTHONPATH=. .venv/bin/python <this checkout>/bench/per_row.py
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import faust

from app.intake.staging import prepare_rows
from app.kafka.codecs import decode_record, encode_event_for
from app.kafka.publisher import Publisher
from app.models import DateWindow, KnownReference
from app.ops.log_format import JsonLines
from app.recording import audit_trail, dedup
from app.settings import Settings
from tables.references import References

ROWS = 1_000
PASSES = 15
WARM_UP = 3


def staged_rows(count: int) -> list[tuple[Any, ...]]:
    """Rows as the poller claims them (``ROW_COLUMNS``); loan accounts repeat, as in bench."""
    return [
        (
            number,
            f"BENCH-{number:08d}",
            f"LA{number % 997:06d}",
            f"CIF{number % 991:06d}",
            Decimal(12_345 + number) / 100,
            datetime(2026, 11, 20, 10, 0, 0),  # noqa: DTZ001 (a TIMESTAMP column: naive UTC)
            "card",
            json.dumps({"batch": "BENCH", "n": number}),
        )
        for number in range(count)
    ]


class IntakeEvent:
    """What the table reads of an intake event: its partition (Faust holds it weakly)."""

    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition)


class Acknowledged:
    """The publisher's place for the changelog: each partition's messages get the next offsets."""

    def __init__(self) -> None:
        self.ends: dict[int, int] = {}

    async def publish(
        self, topic: str, messages: Sequence[Any], partitions: Sequence[int]
    ) -> dict[int, int]:
        last = {}
        for partition in partitions:
            last[partition] = self.ends[partition] = self.ends.get(partition, -1) + 1
        return last


class Stages:
    """One pass over the rows, timing each stage."""

    def __init__(self) -> None:
        self.rows = staged_rows(ROWS)
        self.now = datetime.now(UTC)
        self.window = DateWindow(
            earliest=date(2000, 1, 1), max_future=timedelta(days=1), retention_months=24
        )
        self.partitioner = Publisher(Settings())._partitioner
        self.partitions = list(range(12))
        self.passes = 0
        self.loop = asyncio.new_event_loop()
        app = faust.App("per-row", store="rocksdb://", datadir=tempfile.mkdtemp(prefix="per-row-"))
        self.references = References(app, Settings(), Acknowledged())  # type: ignore[arg-type]
        self.events = [IntakeEvent(partition) for partition in self.partitions]
        #: Rows the last pass accepted (all of them: the path timed is a good row's).
        self.accepted = 0

    def close(self) -> None:
        self.loop.close()

    def partition(self, key: bytes) -> int:
        try:
            return int(self.partitioner(key, self.partitions))
        except TypeError:  # a checkout before app/kafka/partitioner.py: aiokafka's signature
            return int(self.partitioner(key, self.partitions, self.partitions))

    def run(self) -> dict[str, float]:
        self.passes += 1
        took: dict[str, float] = {}
        clock = time.process_time()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.process_time()
            took[name] = now - clock
            clock = now

        # In the worker (STAGING_HELPER_PROCESSES=0, the default): no pickling either way,
        # and no fingerprint for a reference the poller has not seen before.
        prepared = prepare_rows(self.rows, self.window, self.now)
        lap("check + encode (poller)")
        self.accepted = len(prepared.records)
        for staged in prepared.records:
            # Intake keys are unique references: a new key every pass.
            self.partition(f"{self.passes}-{staged.reference_number}".encode())
        lap("partition intake keys")
        records = []
        for staged in prepared.records:
            record = decode_record(staged.value)
            self.window.check(record.payment_date, self.now, recording=True)
            records.append(record)
        lap("decode + window (agent)")
        ids = [(record.payment_id, record.event_id, record.fingerprint) for record in records]
        assert len(ids) == len(records)
        lap("ids + fingerprint (agent)")
        entries = []
        for record, (payment_id, _, fingerprint) in zip(records, ids, strict=True):
            reference = f"{self.passes}-{record.reference_number}"  # a new key every pass
            event = self.events[self.partition(reference.encode())]
            entries.append((event, reference, KnownReference(fingerprint, payment_id)))
        clock = time.process_time()  # the partitions are Kafka's to give (not timed)
        self.loop.run_until_complete(self.references.put_many(entries))
        lap("references table (agent)")
        events = [
            (record.loan_account_number.encode(), encode_event_for(record, "2026-12-02T07:00:00Z"))
            for record in records
        ]
        lap("event JSON (agent)")
        for key, _ in events:
            self.partition(key)
        lap("partition event keys")
        decisions = [
            dedup.decision(
                record.reference_number,
                "created",
                source=record.source,
                source_id=record.source_id,
                channel=record.payment_channel,
                payment_id=record.payment_id,
            )
            for record in records
        ]
        audit_trail.decisions(decisions, [])
        lap("decisions + audit lines (agent)")
        return took


def write_audit_lines_to_memory() -> None:
    """The audit trail as the worker writes it (JSON lines), into memory instead of stderr."""
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonLines())
    audit_trail.log.handlers[:] = [handler]
    audit_trail.log.setLevel(logging.INFO)
    audit_trail.log.propagate = False


def main() -> None:
    write_audit_lines_to_memory()
    stages = Stages()
    for _ in range(WARM_UP):
        stages.run()
    passes = [stages.run() for _ in range(PASSES)]
    stages.close()
    total = 0.0
    for name in passes[0]:
        per_row = statistics.median(took[name] for took in passes) / ROWS * 1e6
        total += per_row
        print(f"{name:34s} {per_row:6.2f} µs/row")
    print(f"{'sum':34s} {total:6.2f} µs/row")


if __name__ == "__main__":
    main()
