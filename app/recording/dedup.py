"""Dedup: the one policy that says created, duplicate or conflict, for every path.

Postgres decides who records a reference: the payment store claims it once, with
``ON CONFLICT DO NOTHING`` (app/recording/payment_store.py). What that claim means
for a record is said here, and only here:

=====================================  ==============================================
the reference                          the record's outcome
=====================================  ==============================================
claimed by this batch, first carrier   created
claimed by this batch, later carrier   duplicate if the same payment, else conflict
recorded before                        duplicate if the same payment, else conflict
=====================================  ==============================================

"The same payment" is an equal fingerprint, or the fingerprint a payment recorded
before currency was a field has (``PaymentRecord.is_recorded_as``).

The doors (the webhook views' memory and Redis caches, the staging poller's
pre-filter) may skip the trip to the record agent for a **duplicate** of a committed
reference only (:func:`is_duplicate`; a staging row, which names no currency, by
its fingerprint alone: :func:`is_exact_repeat`); anything else, a possible conflict
included, goes to the agent, which decides. Every decision, whoever takes it, is
built by :func:`decision`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from app.models import Decision, Outcome, PaymentRecord, Source, payment_id_for


def outcome_for(record: PaymentRecord, recorded_fingerprint: str, *, first: bool) -> Outcome:
    """``record``'s outcome, its reference recorded with ``recorded_fingerprint``.

    ``first``: this record is the first carrier of a reference its own batch claimed.
    """
    if first:
        return "created"
    if record.is_recorded_as(recorded_fingerprint):
        return "duplicate"
    return "conflict"


def is_duplicate(record: PaymentRecord, recorded_fingerprint: str | None) -> bool:
    """A door's shortcut: the reference is recorded, as this very payment (a cache says so)."""
    return recorded_fingerprint is not None and record.is_recorded_as(recorded_fingerprint)


def is_exact_repeat(fingerprint: str, recorded_fingerprint: str | None) -> bool:
    """A door's shortcut: the reference is recorded with exactly this fingerprint.

    (The staging poller also counts a row carrying an earlier row of its own batch:
    that one travels in the same transaction.)
    """
    return recorded_fingerprint is not None and fingerprint == recorded_fingerprint


def decision(
    reference: str,
    outcome: Outcome,
    *,
    source: Source,
    source_id: str,
    channel: str | None,
    payment_id: uuid.UUID | None = None,
    differing_fields: Sequence[str] = (),
) -> Decision:
    """The decision for one record; ``payment_id`` defaults to the reference's own."""
    return Decision(
        reference_number=reference,
        outcome=outcome,
        payment_id=payment_id or payment_id_for(reference),
        source=source,
        source_id=source_id,
        differing_fields=tuple(differing_fields),
        channel=channel,
    )


def duplicate_of(record: PaymentRecord) -> Decision:
    """The decision a door takes for an exact repeat, without the record agent."""
    return decision(
        record.reference_number,
        "duplicate",
        source=record.source,
        source_id=record.source_id,
        channel=record.payment_channel,
    )
