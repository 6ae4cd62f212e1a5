"""The Quix Streams 3.28 peer's consumer: RocksDB state with its changelog, a batching sink.

``.venv-peers/bin/python -m bench.peers.quix_consumer --kafka HOST:PORT --dsn postgresql://...
--group G --state-dir DIR`` (its own virtualenv: ``bench/peers/requirements.txt``). A stateful
filter drops references this partition's state has seen; the sink takes what passed since the
last checkpoint, claims it in ``payment_references`` (``ON CONFLICT DO NOTHING RETURNING``),
COPYs the new payments in the same transaction, publishes one ``payment.recorded`` per new
payment and waits for the acks. Quix commits the state and the offsets only after the sink has
flushed. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Producer
from quixstreams import Application, State
from quixstreams.sinks import BatchingSink, SinkBatch

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

#: asyncpg's $n placeholders as psycopg's (the SQL is written once, in job.py).
CLAIM_REFERENCES_PSYCOPG = (
    CLAIM_REFERENCES.replace("$1", "%s").replace("$2", "%s").replace("$3", "%s").replace("$4", "%s")
)
COPY_PAYMENTS = f"COPY payment_service.payments ({', '.join(PAYMENT_COLUMNS)}) FROM STDIN"

#: Checkpoint (flush the sink, commit state and offsets) every this many seconds or records.
COMMIT_INTERVAL = 0.5
COMMIT_EVERY = 2000


def first_seen(value: dict[str, Any], state: State) -> bool:
    """True the first time this key (the reference) reaches its partition's state."""
    if state.get("seen"):
        return False
    state.set("seen", True)
    return True


class PaymentsSink(BatchingSink):
    """Records a checkpoint's records in one transaction, then publishes their events."""

    def __init__(self, kafka: str, dsn: str) -> None:
        super().__init__()
        self._kafka = kafka
        self._dsn = dsn
        self._connection: psycopg.Connection[Any] | None = None
        self._producer: Producer | None = None
        self.created = 0

    def setup(self) -> None:
        self._connection = psycopg.connect(self._dsn)
        self._producer = Producer(
            {
                "bootstrap.servers": self._kafka,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )

    def write(self, batch: SinkBatch) -> None:  # one partition's: flush() takes them all
        raise NotImplementedError

    def flush(self) -> None:
        try:
            records = [item.value for batch in self._batches.values() for item in batch]
            if records:
                self._record(records)
        finally:
            self._batches.clear()

    def _record(self, records: list[dict[str, Any]]) -> None:
        assert self._connection is not None
        assert self._producer is not None
        fresh = {item["reference_number"]: item for item in records}
        with self._connection.transaction(), self._connection.cursor() as cursor:
            claimed = cursor.execute(
                CLAIM_REFERENCES_PSYCOPG, references_columns(list(fresh.values()))
            ).fetchall()
            new = [fresh[row[0]] for row in claimed]
            if new:
                with cursor.copy(COPY_PAYMENTS) as copy:
                    for item in new:
                        copy.write_row(payment_row(item))
        failures: list[Any] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(error)

        recorded_at = utc_text(datetime.now(UTC))
        for item in new:
            key, value = encode_event(item, recorded_at)
            self._producer.produce(EVENTS, value, key, on_delivery=delivered)
            self._producer.poll(0)
        self._producer.flush()
        if failures:
            # The checkpoint fails: state and offsets stay, the records come again.
            raise RuntimeError(f"{len(failures)} events not acknowledged: {failures[0]}")
        self.created += len(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", required=True, help="bootstrap servers")
    parser.add_argument("--dsn", required=True, help="Postgres connection URL")
    parser.add_argument("--group", required=True, help="consumer group")
    parser.add_argument("--state-dir", required=True, help="RocksDB state folder")
    args = parser.parse_args()
    app = Application(
        broker_address=args.kafka,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL,
        commit_every=COMMIT_EVERY,
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
        loglevel="WARNING",
    )
    intake = app.topic(INTAKE, value_deserializer="json", key_deserializer="str")
    sink = PaymentsSink(args.kafka, args.dsn)
    app.dataframe(intake).filter(first_seen, stateful=True).sink(sink)
    app.run()  # until SIGTERM
    print(f"consumer: {sink.created} payments created", flush=True)


if __name__ == "__main__":
    main()
