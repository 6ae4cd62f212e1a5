"""The text rules of the record run as one validator per field, with the errors they always had.

The record's texts were checked by a chain of up to five validators (NFC, control
characters, invisible characters, then pydantic's own length checks, which it runs
as Python validators of their own after a validator). The record now runs the
checks as one. ``Before`` below is the record with the old chain: both must give
the same record, or the same errors (type, field, message, context), whatever the text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from app.models import (
    PaymentRecord,
    _nfc,
    _no_control_characters,
    _no_invisible_characters,
)

OldIdentityText = Annotated[
    str,
    BeforeValidator(_nfc),
    AfterValidator(_no_control_characters),
    AfterValidator(_no_invisible_characters),
]
OldIdentifier = Annotated[str, Field(min_length=1), AfterValidator(_no_control_characters)]


class Before(BaseModel):
    """The record's texts as they were checked before."""

    model_config = ConfigDict(str_strip_whitespace=True)

    reference_number: Annotated[OldIdentityText, Field(min_length=1, max_length=255)]
    loan_account_number: Annotated[OldIdentityText, Field(min_length=1, max_length=20)]
    cif: Annotated[OldIdentityText, Field(min_length=1, max_length=20)]
    payment_channel: Annotated[OldIdentityText, Field(max_length=100)] | None = None
    source_id: Annotated[OldIdentifier, Field(max_length=255)]

    @field_validator("payment_channel", mode="before")
    @classmethod
    def _blank_channel_is_none(cls, value: Any) -> Any:  # as the record has it
        return None if isinstance(value, str) and not value.strip() else value


TEXT_FIELDS = tuple(Before.model_fields)


def python_validators(model: type[BaseModel], name: str) -> int:
    """How many Python function validators pydantic runs for field ``name``."""
    count = 0
    pending: list[Any] = [model.__pydantic_core_schema__]
    while pending:
        schema = pending.pop()
        if isinstance(schema, dict):
            if schema.get("type") == "model-fields":
                pending.append(schema["fields"][name])
                continue
            if str(schema.get("type", "")).startswith("function-"):
                count += 1
            pending.extend(v for k, v in schema.items() if k != "fields" and isinstance(v, dict))
            pending.extend(v for value in schema.values() if isinstance(value, list) for v in value)
    return count


def test_each_text_runs_its_rules_in_one_validator() -> None:
    # reference, account, cif: NFC + rules (was NFC, two checks, min and max length).
    for name in ("reference_number", "loan_account_number", "cif"):
        assert python_validators(Before, name) == 5
        assert python_validators(PaymentRecord, name) == 2
    assert python_validators(PaymentRecord, "source_id") == 1


def outcome(model: type[BaseModel], texts: dict[str, Any]) -> Any:
    values = {
        "amount": "1.00",
        "payment_date": datetime(2026, 11, 1, tzinfo=UTC),
        "source": "webhook",
        "received_at": datetime(2026, 11, 2, tzinfo=UTC),
        **texts,
    }
    if model is Before:
        values = texts
    try:
        made = model.model_validate(values)
    except ValidationError as exc:
        return [
            (error["type"], error["loc"], error["msg"], repr(error.get("ctx")))
            for error in exc.errors(include_url=False)
            if error["loc"][0] in TEXT_FIELDS
        ]
    return {name: getattr(made, name) for name in TEXT_FIELDS}


TEXTS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=30),
    st.sampled_from(["", " ", "REF-1", " REF-1 ", "A" * 20, "A" * 21, "é" * 255, "é" * 256]),
    st.builds(lambda n: "e\u0301" * n, st.integers(0, 300)),  # longer before NFC than after
)


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({name: TEXTS for name in TEXT_FIELDS}))
@example({name: "x\u200by" for name in TEXT_FIELDS})  # invisible
@example({name: "x\x07y" for name in TEXT_FIELDS})  # control
@example({name: "e\u0301" * 20 for name in TEXT_FIELDS})  # 40 code points, 20 after NFC
@example({name: "" for name in TEXT_FIELDS})
@example({name: "R" * 256 for name in TEXT_FIELDS})
def test_the_rules_give_what_the_chain_gave(texts: dict[str, str]) -> None:
    assert outcome(PaymentRecord, texts) == outcome(Before, texts)
