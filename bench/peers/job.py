"""The staging job the peers do, written once: ids, the row check, encodings and SQL.

Standard library only (both peers' virtualenvs import it). The ids, fingerprints and the
event's JSON are the project's (``app/models.py``, ``app/kafka/codecs.py``), so the bench's
correctness check applies to every implementation alike; ``tests/unit/test_bench_peers.py``
holds them equal. What the project adds is skipped on purpose (the outbox, conflict detection by
fingerprint, decisions, the audit trail, metrics, the richer validation).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

#: app/models.py: the payment's and its event's ids are uuid5s of the reference under these.
PAYMENT_ID_NAMESPACE = uuid.UUID("6f1f2d0e-5b8a-4c4e-9a51-3d0c6c1b7a10")
EVENT_ID_NAMESPACE = uuid.UUID("0b6f6a4c-8f0e-4d0b-8c39-2a7e5f1d9c22")

INTAKE = "payment.intake"
DLQ = "payment.intake.dlq"
EVENTS = "payment.events"

#: Rows one claim takes.
CLAIM_SIZE = 1000
#: The project's default date window: PAYMENT_DATE_MIN and PAYMENT_DATE_MAX_FUTURE_DAYS.
EARLIEST = datetime(2000, 1, 1)  # noqa: DTZ001 (staging dates are naive UTC)
MAX_FUTURE = timedelta(days=1)

CLAIM_ROWS = """
SELECT id, reference_number, loan_account_number, cif, amount, payment_date,
       payment_channel, metadata::text AS metadata
FROM public.payment_staging
WHERE NOT processed
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

MARK_PROCESSED = """
UPDATE public.payment_staging SET processed = TRUE, processed_at = timezone('utc', now())
WHERE id = ANY($1::bigint[])
"""

#: The bench measures from the first claim's started_at, whoever claimed it.
LOG_BATCH = """
INSERT INTO payment_service.staging_process_log
  (batch_start_id, batch_end_id, total_records, processed_records, error_records,
   status, started_at, completed_at)
VALUES ($1, $2, $3, $4, $5, 'completed', $6, timezone('utc', now()))
"""

#: The references a batch is the first to record (the others are duplicates).
CLAIM_REFERENCES = """
INSERT INTO payment_service.payment_references
  (reference_number, payment_id, payment_date, fingerprint)
SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamp[], $4::text[])
ON CONFLICT DO NOTHING
RETURNING reference_number
"""

PAYMENT_COLUMNS = (
    "id",
    "reference_number",
    "loan_account_number",
    "cif",
    "amount",
    "payment_date",
    "payment_channel",
    "source",
    "metadata",
)


def payment_id_for(reference: str) -> uuid.UUID:
    return uuid.uuid5(PAYMENT_ID_NAMESPACE, reference)


def event_id_for(reference: str) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, reference)


def fingerprint_of(record: dict[str, Any]) -> str:
    """SHA-256 of the defining fields, as the project hashes a record without a currency."""
    joined = "\x1f".join(
        (
            record["reference_number"],
            record["loan_account_number"],
            record["cif"],
            record["amount"],
            record["payment_date"],
            record["payment_channel"] or "",
        )
    )
    return hashlib.sha256(joined.encode()).hexdigest()


def check_row(row: Any, now: datetime) -> str | None:
    """What is wrong with a staging row (None: nothing): the checks that matter for the job."""
    if row["amount"] <= 0:
        return "amount must be greater than 0"
    if not EARLIEST <= row["payment_date"] <= now + MAX_FUTURE:
        return "payment_date outside the accepted window"
    if row["metadata"] is not None and not row["metadata"].startswith("{"):
        return "metadata must be a JSON object"
    return None


def encode_intake(row: Any) -> bytes:
    """A checked staging row as the intake record (amount as 2-place text, dates naive UTC)."""
    return json.dumps(
        {
            "reference_number": row["reference_number"],
            "loan_account_number": row["loan_account_number"],
            "cif": row["cif"],
            "amount": f"{row['amount']:.2f}",
            "payment_date": row["payment_date"].isoformat(),
            "payment_channel": row["payment_channel"] or None,
            "metadata": json.loads(row["metadata"]) if row["metadata"] else {},
            "source": "staging",
            "source_id": str(row["id"]),
        }
    ).encode()


def encode_dead_letter(row: Any, reason: str, now: datetime) -> bytes:
    return json.dumps(
        {
            "reason": "invalid",
            "details": [{"field": "row", "message": reason}],
            "reference_number": row["reference_number"],
            "source": "staging",
            "source_id": str(row["id"]),
            "failed_at": now.isoformat() + "Z",
        }
    ).encode()


def references_columns(
    records: list[dict[str, Any]],
) -> tuple[list[str], list[uuid.UUID], list[datetime], list[str]]:
    """The four arrays of CLAIM_REFERENCES for ``records``."""
    return (
        [r["reference_number"] for r in records],
        [payment_id_for(r["reference_number"]) for r in records],
        [datetime.fromisoformat(r["payment_date"]) for r in records],
        [fingerprint_of(r) for r in records],
    )


def payment_row(record: dict[str, Any]) -> tuple[Any, ...]:
    """The payments row of ``record`` (PAYMENT_COLUMNS), metadata as JSON text."""
    return (
        payment_id_for(record["reference_number"]),
        record["reference_number"],
        record["loan_account_number"],
        record["cif"],
        Decimal(record["amount"]),
        datetime.fromisoformat(record["payment_date"]),
        record["payment_channel"],
        "staging",
        json.dumps(record["metadata"]),
    )


def utc_text(value: datetime) -> str:
    """app.models.utc_text: ISO 8601 with a Z (naive values are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_event(record: dict[str, Any], recorded_at: str) -> tuple[bytes, bytes]:
    """The ``payment.recorded`` event of a new payment: (key = account, value), as the project's."""
    reference = record["reference_number"]
    value = json.dumps(
        {
            "schema_version": 1,
            "event_id": str(event_id_for(reference)),
            "event_type": "payment.recorded",
            "timestamp": recorded_at,
            "payment": {
                "id": str(payment_id_for(reference)),
                "reference_number": reference,
                "loan_account_number": record["loan_account_number"],
                "cif": record["cif"],
                "amount": float(record["amount"]),
                "payment_date": utc_text(datetime.fromisoformat(record["payment_date"])),
                "payment_channel": record["payment_channel"],
                "currency": None,
                "source": "staging",
                "metadata": record["metadata"],
            },
        },
        separators=(",", ":"),
    ).encode()
    return record["loan_account_number"].encode(), value
