"""A webhook request as a canonical record, or the 4xx that says why it is not one.

The view (``web/webhooks.py``) checks the signature first; then this module
parses the body strictly (no duplicate keys, no NaN, decimals kept exact),
validates it against its channel's model, maps it to the canonical record and
validates that with the same rules as staging rows. Field errors name the
fields of the body the sender wrote, not ours.

A channel's notices carry the channel as ``payment_channel``; the generic body's
free text may name any channel but one that has an endpoint (and a secret) of its
own, so the holder of the default secret cannot speak for ``card``. Hence
:func:`app.models.endpoint_of` recovers a webhook record's endpoint from its channel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from app.intake.channels import CHANNELS, GENERIC, Channel
from app.models import DateWindow, FieldError, PaymentRecord, field_errors

#: Where a canonical field comes from in each channel's body, when the names differ.
BODY_FIELDS = {
    "bank_transfer": {"reference_number": "end_to_end_id", "payment_date": "value_date"},
    "card": {
        "reference_number": "id",
        "amount": "amount_minor",
        "payment_date": "captured_at",
    },
}


@dataclass
class Rejected(Exception):
    """A request the service answers with ``status`` and a JSON body, recording nothing."""

    status: int
    error: str
    message: str
    errors: list[FieldError] = field(default_factory=list)
    #: Seconds for the Retry-After header (429, 503).
    retry: int | None = None

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.errors:
            body["errors"] = [error.model_dump() for error in self.errors]
        return body


def parse_body(raw: bytes) -> Any:
    """The JSON in ``raw``: numbers with a fraction as Decimal; duplicate keys and NaN refused."""
    try:
        return json.loads(
            raw,
            parse_float=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_refuse_duplicates,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise Rejected(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def record_for(
    channel: Channel, body: Any, *, webhook_id: str, received_at: datetime, window: DateWindow
) -> PaymentRecord:
    """The canonical record of a parsed body (raises :class:`Rejected` with 422)."""
    if not isinstance(body, dict):
        raise Rejected(
            422,
            "invalid_body",
            "the body must be a JSON object",
            [FieldError(field="body", message="must be a JSON object")],
        )
    try:
        notice = channel.model.model_validate(body)
    except ValidationError as exc:
        raise Rejected(
            422, "invalid_body", "the body breaks the channel's format", field_errors(exc)
        ) from None
    values = notice.canonical()
    if channel is GENERIC:
        _refuse_channel_with_endpoint(values.get("payment_channel"))
    values.update(source="webhook", source_id=webhook_id, received_at=received_at)
    try:
        return PaymentRecord.model_validate(values, context={"window": window})
    except ValidationError as exc:
        names = {"source_id": "webhook-id header", **BODY_FIELDS.get(channel.name, {})}
        errors = [
            FieldError(field=names.get(error.field, error.field), message=error.message)
            for error in field_errors(exc)
        ]
        raise Rejected(422, "invalid_payment", "the payment breaks a rule", errors) from None


def _refuse_channel_with_endpoint(payment_channel: Any) -> None:
    """422 when the generic body names a channel that must come through its own endpoint."""
    if not isinstance(payment_channel, str):
        return  # the record's own rules answer for other types
    # "Card", " card ", "bank-transfer" and "Bank Transfer" mean the same channel.
    name = "_".join(payment_channel.strip().lower().replace("-", " ").split())
    if name in CHANNELS:
        endpoint = f"/api/v1/payments/webhook/{name}"
        raise Rejected(
            422,
            "invalid_body",
            f"{name} payments come through POST {endpoint}, signed with that channel's secret",
            [
                FieldError(
                    field="payment_channel",
                    message=f"must not be {name!r} here: send these notices to {endpoint}",
                )
            ],
        )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            # Two values for one field: which one the sender meant is not ours to guess.
            raise ValueError(f"the key {key!r} appears twice in one object")
        result[key] = value
    return result
