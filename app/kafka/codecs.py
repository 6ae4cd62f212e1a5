"""Bytes on each topic, and the models they carry: one encode/decode pair per topic.

Topics are declared raw in Faust and decoded here, so a record that cannot be
decoded becomes a dead letter with a reason instead of an error inside Faust
that would skip it silently.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import ValidationError
from pydantic_core import to_json

from app.exceptions import UndecodableRecord
from app.models import (
    DateWindow,
    DeadLetter,
    FieldError,
    PaymentRecord,
    PaymentRecordedEvent,
    utc_text,
)

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


#: Largest dead letter (key and value) we send. The publisher's producer keeps aiokafka's
#: max_request_size (1 MiB), and the broker's message.max.bytes is 1 MiB + 12: a record
#: batch holding one letter of this size fits both, with room for the batch's headers.
DEAD_LETTER_MAX_BYTES = 1_000_000

#: Longest text a cut-down letter keeps of each identifying field and each detail (with
#: CUT_DETAILS, a cut-down letter stays far below DEAD_LETTER_MAX_BYTES whatever it held).
CUT_FIELD_CHARACTERS = 1024
#: Most details a cut-down letter keeps.
CUT_DETAILS = 20


def encode_dead_letter(letter: DeadLetter) -> bytes:
    """``payment.intake.dlq`` value, cut down when whole it would not fit (see :func:`cut_down`)."""
    return dead_letter_message(letter)[1]


def dead_letter_message(letter: DeadLetter) -> tuple[bytes | None, bytes]:
    """The DLQ key (the reference) and value of ``letter``, always small enough to send."""
    key, value = _letter_key(letter), letter.model_dump_json().encode()
    if len(key or b"") + len(value) > DEAD_LETTER_MAX_BYTES:
        letter = cut_down(letter, value)
        key, value = _letter_key(letter), letter.model_dump_json().encode()
    return key, value


def _letter_key(letter: DeadLetter) -> bytes | None:
    reference = letter.reference_number
    return None if reference is None else reference.encode()


def cut_down(letter: DeadLetter, encoded: bytes | None = None) -> DeadLetter:
    """``letter`` without the original record, which is too large for the broker.

    Keeps the reason, the reference, source and source_id, the details (each cut to
    CUT_FIELD_CHARACTERS) and, as one more detail on field ``original``, the byte
    size and SHA-256 of the original as the whole letter carried it (``original``
    as JSON, or ``original_text`` as UTF-8). The full record stays where it came
    from: the staging row in Postgres, or the intake topic until its retention.
    """
    if encoded is None:
        encoded = letter.model_dump_json().encode()
    if letter.original is not None:
        original = to_json(letter.original)
    else:
        original = (letter.original_text or "").encode("utf-8", errors="replace")
    note = FieldError(
        field="original",
        message=(
            f"cut down: the letter was {len(encoded)} bytes, over the {DEAD_LETTER_MAX_BYTES} "
            f"a dead letter may have; the original ({len(original)} bytes, "
            f"sha256 {hashlib.sha256(original).hexdigest()}) is left out"
        ),
    )
    details = [
        FieldError(field=d.field[:CUT_FIELD_CHARACTERS], message=d.message[:CUT_FIELD_CHARACTERS])
        for d in letter.details[:CUT_DETAILS]
    ]
    return letter.model_copy(
        update={
            "reference_number": _cut(letter.reference_number),
            "source": _cut(letter.source),
            "source_id": _cut(letter.source_id),
            "details": [*details, note],
            "differing_fields": [name[:CUT_FIELD_CHARACTERS] for name in letter.differing_fields],
            "original": None,
            "original_text": None,
        }
    )


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:CUT_FIELD_CHARACTERS]


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Parse a ``payment.intake.dlq`` value."""
    return DeadLetter.model_validate_json(raw)
