"""Webhook body formats: one small adapter per channel, each mapping to the canonical record.

A channel is a pydantic model of the sender's own body plus a mapping to the
fields of :class:`~app.models.PaymentRecord`. The canonical rules (lengths,
amount, date window, metadata) are checked once, on the mapped record, so
every channel answers with the same field errors as the staging input.

- ``generic`` (``POST /api/v1/payments/webhook``): the plan's body.
- ``bank_transfer``: a credit-transfer notice — decimal-string amount, value
  date, end-to-end id as the reference.
- ``card``: a card processor's capture notice — amount in minor units with an
  ISO 4217 currency, ISO 8601 timestamp with offset.

Examples of each body are in ``docs/webhooks.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from app.currencies import CurrencyCode, minor_unit_exponent


class _Body(BaseModel):
    # Unknown fields are refused: a typo must not silently drop a value.
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenericNotice(_Body):
    """The plan's webhook body."""

    reference_number: Any
    loan_account_number: Any
    cif: Any
    amount: Any
    payment_date: Any
    payment_channel: Any = None
    currency: Any = None
    metadata: Any = None

    def canonical(self) -> dict[str, Any]:
        return self.model_dump()


class BankAccount(_Body):
    name: StrictStr | None = Field(None, max_length=140)
    iban: StrictStr | None = Field(None, max_length=34)


class BankTransferNotice(_Body):
    """A credit transfer received for a loan (fields after ISO 20022 camt.054)."""

    end_to_end_id: StrictStr
    #: A decimal string, never a JSON number: "1500000.00".
    amount: Annotated[StrictStr, Field(pattern=r"^[0-9]{1,13}(\.[0-9]{1,2})?$")]
    currency: CurrencyCode
    value_date: date
    loan_account_number: StrictStr
    cif: StrictStr
    debtor: BankAccount | None = None
    remittance_information: StrictStr | None = Field(None, max_length=140)

    def canonical(self) -> dict[str, Any]:
        # The currency is a field of the record (and fingerprinted); metadata keeps it too,
        # as it did before, for consumers of the event that read it there.
        metadata: dict[str, Any] = {"currency": self.currency}
        if self.debtor is not None:
            metadata["debtor"] = self.debtor.model_dump(exclude_none=True)
        if self.remittance_information is not None:
            metadata["remittance_information"] = self.remittance_information
        return {
            "reference_number": self.end_to_end_id,
            "loan_account_number": self.loan_account_number,
            "cif": self.cif,
            "amount": Decimal(self.amount),
            "payment_date": self.value_date,
            "payment_channel": "bank_transfer",
            "currency": self.currency,
            "metadata": metadata,
        }


class Card(_Body):
    brand: StrictStr = Field(max_length=20)
    last4: Annotated[StrictStr, Field(pattern=r"^\d{4}$")]


class CardCaptureNotice(_Body):
    """A card payment captured by the processor (Stripe-like shape)."""

    id: StrictStr
    amount_minor: StrictInt = Field(gt=0)
    currency: CurrencyCode
    #: The format requires an offset: a time without one is not taken as UTC, it is refused.
    captured_at: AwareDatetime
    loan_account_number: StrictStr
    cif: StrictStr
    card: Card | None = None

    def canonical(self) -> dict[str, Any]:
        exponent = minor_unit_exponent(self.currency)
        metadata: dict[str, Any] = {"currency": self.currency, "amount_minor": self.amount_minor}
        if self.card is not None:
            metadata["card"] = self.card.model_dump()
        return {
            "reference_number": self.id,
            "loan_account_number": self.loan_account_number,
            "cif": self.cif,
            "amount": Decimal(self.amount_minor).scaleb(-exponent),
            "payment_date": self.captured_at,
            "payment_channel": "card",
            "currency": self.currency,
            "metadata": metadata,
        }


@dataclass(frozen=True)
class Channel:
    """A webhook format: its name (the URL segment and secret suffix) and body model."""

    name: str
    model: type[GenericNotice] | type[BankTransferNotice] | type[CardCaptureNotice]


GENERIC = Channel("generic", GenericNotice)

#: ``POST /api/v1/payments/webhook/{name}``; the generic body has the bare path.
CHANNELS = {
    channel.name: channel
    for channel in (
        Channel("bank_transfer", BankTransferNotice),
        Channel("card", CardCaptureNotice),
    )
}
