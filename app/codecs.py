"""Bytes on each topic, and the models they carry: one encode/decode pair per topic.

Topics are declared raw in Faust and decoded here, so a record that cannot be
decoded becomes a dead letter with a reason instead of an error inside Faust
that would skip it silently.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError
from pydantic_core import to_json

from app.exceptions import UndecodableRecord
from app.models import DateWindow, DeadLetter, PaymentRecord, PaymentRecordedEvent, utc_text

#: Left out of an intake record that has none (see encode_record).
_NO_CURRENCY = {"currency"}


def encode_record(record: PaymentRecord) -> bytes:
    """``payment.intake`` value: the canonical record as JSON (amount as a decimal string)."""
    # Without a currency the record is written as before currency was a field, so a
    # worker not yet upgraded (its PaymentRecord forbids unknown fields) still reads it.
    return record.model_dump_json(
        exclude=_NO_CURRENCY if record.currency is None else None
    ).encode()


def decode_record(raw: bytes | None, window: DateWindow | None = None) -> PaymentRecord:
    """Parse a ``payment.intake`` value.

    Raises :class:`UndecodableRecord` when the bytes are not a JSON object at all,
    and pydantic's ``ValidationError`` when the object breaks a rule.
    """
    if not raw:
        raise UndecodableRecord("empty value")
    try:
        return PaymentRecord.model_validate_json(raw, context={"window": window})
    except ValidationError as exc:
        if any(error["type"] in ("json_invalid", "model_type") for error in exc.errors()):
            raise UndecodableRecord(exc.errors()[0]["msg"]) from None
        raise


def encode_event(event: PaymentRecordedEvent) -> bytes:
    """``payment.events`` value."""
    return event.model_dump_json().encode()


def encode_event_for(record: PaymentRecord, recorded_at: datetime | str) -> bytes:
    """The same bytes as ``encode_event(PaymentRecordedEvent.for_record(record, recorded_at))``.

    The record agent encodes one event per created payment; building the two
    pydantic models for it cost more than the rest of the row (bench/staging).
    pydantic's own serializer writes the dict, as it writes the model; a batch
    passes ``recorded_at`` already as text. A unit test holds the two encodings equal.
    """
    return to_json(
        {
            "schema_version": 1,
            "event_id": str(record.event_id),
            "event_type": "payment.recorded",
            "timestamp": recorded_at if isinstance(recorded_at, str) else utc_text(recorded_at),
            "payment": {
                "id": str(record.payment_id),
                "reference_number": record.reference_number,
                "loan_account_number": record.loan_account_number,
                "cif": record.cif,
                # See RecordedPayment: the shortest float repr is the exact decimal.
                "amount": float(record.amount),
                "payment_date": utc_text(record.payment_date),
                "payment_channel": record.payment_channel,
                "currency": record.currency,
                "source": record.source,
                "metadata": record.metadata,
            },
        }
    )


def decode_event(raw: bytes) -> PaymentRecordedEvent:
    """Parse a ``payment.events`` value (reconcile and tests read them back)."""
    return PaymentRecordedEvent.model_validate_json(raw)


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """``payment.intake.dlq`` value."""
    return letter.model_dump_json().encode()


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Parse a ``payment.intake.dlq`` value."""
    return DeadLetter.model_validate_json(raw)
