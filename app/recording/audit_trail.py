"""The audit trail: INFO lines on the ``payments.audit`` logger, one per decision or refusal.

The record agent writes one line per record of a committed batch (``audit:
"decision"``: created, duplicate, conflict, or rejected for the other dead
letters), and the webhook views one per request refused before the intake
(``audit: "webhook_rejected"``). The fields travel as ``extra=`` so a JSON
line carries them as keys (app/ops/log_format.py); the message repeats the gist
for text logs. Never a body, a secret or a signature: references, ids,
channels and addresses only. A webhook's ``channel`` is the endpoint it came
through (``generic`` for the plan's body), never the body's free text.

The staging poller adds the decisions it takes itself (invalid rows, and exact
repeats it keeps from travelling), and the webhook views the duplicates they
answer from the hot cache.

The agent decides thousands of records a second: :func:`decisions` does no
per-record work when the logger is disabled (AUDIT_LOG=false, or a level above
INFO for ``payments.audit``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from app.models import DeadLetter, Decision, endpoint_of

log = logging.getLogger("payments.audit")

#: The LogRecord attribute holding a batch's entries (app/ops/log_format.py writes one line each).
BATCH_ATTRIBUTE = "audit_batch"

#: Client-sent values (webhook-id, channel in the path) are cut to this many characters.
MAX_CLIENT_TEXT = 255


def enabled() -> bool:
    """True when audit lines would be written (callers skip building them otherwise)."""
    return log.isEnabledFor(logging.INFO)


def decisions(decided: Iterable[Decision], dead_letters: Iterable[DeadLetter]) -> None:
    """One line per decision, and one per dead letter that is not a conflict (a decision too).

    A batch's lines travel as ONE log record (``audit_batch``: each line's message and
    fields), which the JSON formatter writes as one line per entry: a LogRecord and a
    python-json-logger pass per decision cost ~150 µs of the record agent's ~400 µs per
    record (bench/staging). Text logs show the entries' messages, one per line.
    """
    if not enabled():
        return
    entries: list[tuple[str, dict[str, Any]]] = []
    for decision in decided:
        fields: dict[str, Any] = {
            "audit": "decision",
            "outcome": decision.outcome,
            "reference_number": decision.reference_number,
            "source": decision.source,
            "source_id": decision.source_id,
            "channel": _channel(decision.source, decision.channel),
            "payment_id": str(decision.payment_id),
        }
        if decision.outcome == "conflict":
            fields["differing_fields"] = list(decision.differing_fields)
        message = (
            f"{decision.outcome} {decision.reference_number} "
            f"from {decision.source} {decision.source_id}"
        )
        entries.append((message, fields))
    for letter in dead_letters:
        if letter.reason == "conflict":
            continue
        original = letter.original if isinstance(letter.original, dict) else {}
        channel = original.get("payment_channel")
        message = (
            f"rejected {letter.reference_number} from {letter.source} {letter.source_id}: "
            f"{letter.reason}"
        )
        entries.append(
            (
                message,
                {
                    "audit": "decision",
                    "outcome": "rejected",
                    "reason": letter.reason,
                    "reference_number": letter.reference_number,
                    "source": letter.source,
                    "source_id": letter.source_id,
                    "channel": _channel(
                        letter.source, channel if isinstance(channel, str) else None
                    ),
                    "fields": [detail.field for detail in letter.details],
                },
            )
        )
    if entries:
        text = "\n".join(message for message, _ in entries)
        log.info("%s", text, extra={BATCH_ATTRIBUTE: entries})


def _channel(source: str | None, payment_channel: str | None) -> str | None:
    """What ``channel`` says: a webhook's endpoint; a staging row's own channel."""
    return endpoint_of(payment_channel) if source == "webhook" else payment_channel


def webhook_rejected(
    status: int, error: str, channel: str, webhook_id: str | None, client: str | None
) -> None:
    """One line for a webhook request refused before the intake (4xx)."""
    if not enabled():
        return
    channel = channel[:MAX_CLIENT_TEXT]
    webhook_id = None if webhook_id is None else webhook_id[:MAX_CLIENT_TEXT]
    log.info(
        "webhook refused %d %s on channel %r from %s",
        status,
        error,
        channel,
        client,
        extra={
            "audit": "webhook_rejected",
            "status": status,
            "error": error,
            "channel": channel,
            "webhook_id": webhook_id,
            "client": client,
        },
    )
