"""The audit trail: one payments.audit line per decision, dead letter or refused webhook."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

import pytest

from app.intake.staging import prepare_rows
from app.models import DeadLetter, Decision
from app.ops.log_format import JsonLines
from app.recording import audit_trail
from tests.unit.test_recorder import WINDOW, Harness, incoming, payment


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The captured payments.audit records as their JSON lines, parsed."""
    formatter = JsonLines()
    return [
        json.loads(line)
        for record in caplog.records
        if record.name == "payments.audit"
        for line in formatter.format(record).splitlines()
    ]


def without_common_fields(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in ("time", "level", "logger", "message", "pid")}


async def test_each_decision_and_each_other_dead_letter_gets_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payments.audit")
    harness = Harness()
    first = payment("REF-1", payment_channel="card", source_id="41")
    await harness.recorder.handle([incoming(first)])
    report = await harness.recorder.handle(
        [
            incoming(payment("REF-1", payment_channel="card", source_id="42")),
            incoming(payment("REF-1", amount="11.00", payment_channel="card", source_id="43")),
            incoming(payment("FAR", payment_date=first.payment_date.replace(year=1990))),
        ]
    )
    caplog.clear()

    audit_trail.decisions(report.decisions, report.dead_letters)

    lines = audit_lines(caplog)
    assert [without_common_fields(line) for line in lines] == [
        {
            "audit": "decision",
            "outcome": "duplicate",
            "reference_number": "REF-1",
            "source": "staging",
            "source_id": "42",
            "channel": "card",
            "payment_id": str(first.payment_id),
        },
        {
            "audit": "decision",
            "outcome": "conflict",
            "reference_number": "REF-1",
            "source": "staging",
            "source_id": "43",
            "channel": "card",
            "payment_id": str(first.payment_id),
            "differing_fields": ["amount"],
        },
        {
            "audit": "decision",
            "outcome": "rejected",
            "reason": "partition_out_of_range",
            "reference_number": "FAR",
            "source": "staging",
            "source_id": "1",
            "channel": None,
            "fields": ["payment_date"],
        },
    ]
    assert {line["level"] for line in lines} == {"INFO"}
    assert lines[0]["message"] == "duplicate REF-1 from staging 42"


class Untouchable:
    """An iterable that fails the test when anything iterates it."""

    def __iter__(self) -> NoReturn:
        raise AssertionError("a disabled audit logger did per-record work")


@pytest.fixture
def audit_at_warning() -> Iterator[None]:
    logger = logging.getLogger("payments.audit")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("audit_at_warning")
def test_a_disabled_audit_logger_costs_no_per_record_work(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit_trail.decisions(Untouchable(), Untouchable())  # type: ignore[arg-type]
    audit_trail.webhook_rejected(401, "unauthorized", "generic", "msg_1", "127.0.0.1")
    assert audit_lines(caplog) == []


def test_a_refused_webhook_line_names_the_request_not_its_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payments.audit")
    audit_trail.webhook_rejected(401, "unauthorized", "card", "x" * 1000, "203.0.113.9")

    (line,) = audit_lines(caplog)
    assert without_common_fields(line) == {
        "audit": "webhook_rejected",
        "status": 401,
        "error": "unauthorized",
        "channel": "card",
        "webhook_id": "x" * audit_trail.MAX_CLIENT_TEXT,
        "client": "203.0.113.9",
    }


def test_a_dead_letter_without_a_record_still_gets_its_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payments.audit")
    letter = DeadLetter.model_validate(
        {"reason": "undecodable", "reference_number": "JUNK", "failed_at": "2026-11-28T00:00:00Z"}
    )
    decisions: list[Decision] = []

    audit_trail.decisions(decisions, [letter])

    (line,) = audit_lines(caplog)
    assert (line["outcome"], line["reason"], line["reference_number"], line["source_id"]) == (
        "rejected",
        "undecodable",
        "JUNK",
        None,
    )


def test_the_poller_keeps_what_its_own_decisions_need_for_the_trail() -> None:
    now = datetime.now(UTC)
    day = (now - timedelta(days=1)).replace(tzinfo=None)
    rows = [
        (7, "S-1", "LA-1", "CIF-1", Decimal("10.00"), day, "cash", "{}"),
        (8, "S-2", "LA-1", "CIF-1", Decimal("-5.00"), day, "card", "{}"),
    ]

    prepared = prepare_rows(rows, WINDOW, now)

    (staged,) = prepared.records
    assert (staged.reference_number, staged.row_id, staged.channel) == ("S-1", 7, "cash")
    (letter,) = prepared.dead_letters
    assert (letter.reason, letter.source_id, letter.original["payment_channel"]) == (
        "invalid",
        "8",
        "card",
    )


def test_a_webhook_decision_names_its_endpoint_not_the_bodys_channel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="payments.audit")
    decided = [
        Decision(
            reference_number=reference,
            outcome="created",
            payment_id=uuid.uuid4(),
            source=source,
            source_id="msg-1",
            channel=channel,
        )
        for reference, source, channel in (
            ("W-1", "webhook", "branch_cash"),
            ("W-2", "webhook", "card"),
            ("W-3", "webhook", None),
            ("S-1", "staging", "branch_cash"),
        )
    ]

    audit_trail.decisions(decided, [])

    assert [line["channel"] for line in audit_lines(caplog)] == [
        "generic",
        "card",
        "generic",
        "branch_cash",
    ]
