"""Logs on the real stack: every line JSON, one audit line per decision, no secret, no body."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from app.models import payment_id_for
from tests.pipeline import app_env, stage, wait_consumed, wait_drained
from tests.stack import Stack, run_worker, wait_for
from tests.webhook_client import signed

SECRET = "whsec_" + "YXVkaXQgdHJhaWwgdGVzdCBzaWduaW5nIHNlY3JldA=="
OTHER_SECRET = "whsec_" + "bm90IHRoZSBzZWNyZXQgdGhlIHdvcmtlciBrbm93cw=="
WEBHOOK = "/api/v1/payments/webhook"
#: In every webhook body: it must never reach a log line.
BODY_MARKER = "body-only-marker-7f3c"


def notice(reference: str, **changes: Any) -> bytes:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN-AUDIT",
        "cif": "CIF-AUDIT",
        "amount": "150.25",
        "payment_date": (datetime.now(UTC) - timedelta(days=1)).date().isoformat(),
        "payment_channel": "mobile",
        "metadata": {"note": BODY_MARKER},
    }
    return json.dumps(body | changes).encode()


async def staged_ids(stack: Stack) -> list[int]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        return [
            row["id"]
            for row in await connection.fetch("SELECT id FROM payment_staging ORDER BY id")
        ]
    finally:
        await connection.close()


def test_every_line_is_json_and_the_audit_trail_has_one_line_per_decision(
    stack: Stack, run: str, tmp_path: Path
) -> None:
    prefix = f"AUD{run}"
    day = (datetime.now(UTC) - timedelta(days=1)).replace(tzinfo=None, microsecond=0)
    s1, s2, s3 = f"{prefix}-S1", f"{prefix}-S2", f"{prefix}-S3"
    rows = [
        (s1, "LA-1", "CIF-1", Decimal("10.00"), day, "cash", "{}"),
        (s2, "LA-2", "CIF-2", Decimal("20.00"), day, "bank_transfer", "{}"),
        (s1, "LA-1", "CIF-1", Decimal("10.00"), day, "cash", "{}"),  # duplicate
        (s2, "LA-2", "CIF-2", Decimal("21.00"), day, "bank_transfer", "{}"),  # conflict
        (s3, "LA-3", "CIF-3", Decimal("-5.00"), day, None, "{}"),  # invalid
    ]
    asyncio.run(stage(stack, rows))
    ids = [str(row_id) for row_id in asyncio.run(staged_ids(stack))]
    w1 = f"{prefix}-W1"
    sent: dict[str, tuple[bytes, dict[str, str], int]] = {
        "created": (notice(w1), signed(SECRET, notice(w1), msg_id=f"{prefix}-m1"), 201),
        "duplicate": (notice(w1), signed(SECRET, notice(w1), msg_id=f"{prefix}-m2"), 200),
        "conflict": (
            notice(w1, amount="150.26"),
            signed(SECRET, notice(w1, amount="150.26"), msg_id=f"{prefix}-m3"),
            409,
        ),
        "bad signature": (
            notice(f"{prefix}-W4"),
            signed(OTHER_SECRET, notice(f"{prefix}-W4"), msg_id=f"{prefix}-m4"),
            401,
        ),
        "invalid body": (
            notice(f"{prefix}-W5", amount="-1"),
            signed(SECRET, notice(f"{prefix}-W5", amount="-1"), msg_id=f"{prefix}-m5"),
            422,
        ),
    }

    with run_worker(stack, tmp_path, **app_env(run, WEBHOOK_SECRET=SECRET)) as worker:
        asyncio.run(wait_drained(stack, 2, wait_seconds=120, alive=worker.assert_alive))
        # Synchronous answers need the decision listener and every partition's agent:
        # warm up with notices of their own until one is answered 201.
        warm = iter(range(1000))

        def decides() -> bool:
            reference = f"WARM{run}-{next(warm)}"
            body = notice(reference)
            headers = signed(SECRET, body, msg_id=reference)
            return worker.post(WEBHOOK, body, headers)[0] == 201

        wait_for(decides, timeout=90, interval=1, what="synchronous answers")
        answers = {
            name: worker.post(WEBHOOK, body, headers)[0]
            for name, (body, headers, _) in sent.items()
        }
        asyncio.run(wait_consumed(stack, run))
    assert answers == {name: status for name, (_, _, status) in sent.items()}

    records = worker.log_records()  # every line parses, or this fails
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    audit = [record for record in records if record["logger"] == "payments.audit"]
    assert all(record["level"] == "INFO" for record in audit)

    decisions = [
        record
        for record in audit
        if record["audit"] == "decision" and not record["reference_number"].startswith("WARM")
    ]
    assert Counter(
        (d["outcome"], d["reference_number"], d["source"], d["source_id"]) for d in decisions
    ) == Counter(
        [
            ("created", s1, "staging", ids[0]),
            ("created", s2, "staging", ids[1]),
            ("duplicate", s1, "staging", ids[2]),
            ("conflict", s2, "staging", ids[3]),
            ("rejected", s3, "staging", ids[4]),
            ("created", w1, "webhook", f"{prefix}-m1"),
            ("duplicate", w1, "webhook", f"{prefix}-m2"),
            ("conflict", w1, "webhook", f"{prefix}-m3"),
        ]
    )
    by_source_id = {d["source_id"]: d for d in decisions}
    assert by_source_id[ids[3]]["differing_fields"] == ["amount"]
    assert by_source_id[f"{prefix}-m3"]["differing_fields"] == ["amount"]
    assert by_source_id[ids[4]]["reason"] == "invalid"
    assert {d["source_id"]: d["channel"] for d in decisions} == {
        ids[0]: "cash",
        ids[1]: "bank_transfer",
        ids[2]: "cash",
        ids[3]: "bank_transfer",
        ids[4]: None,
        # A webhook's channel is its endpoint, not the body's payment_channel ("mobile").
        f"{prefix}-m1": "generic",
        f"{prefix}-m2": "generic",
        f"{prefix}-m3": "generic",
    }
    for decision in decisions:
        if decision["outcome"] != "rejected":
            assert decision["payment_id"] == str(payment_id_for(decision["reference_number"]))

    refused = [
        {key: record[key] for key in ("status", "error", "channel", "webhook_id", "client")}
        for record in audit
        if record["audit"] == "webhook_rejected"
    ]
    assert refused == [
        {
            "status": 401,
            "error": "unauthorized",
            "channel": "generic",
            "webhook_id": f"{prefix}-m4",
            "client": "127.0.0.1",
        },
        {
            "status": 422,
            "error": "invalid_payment",
            "channel": "generic",
            "webhook_id": f"{prefix}-m5",
            "client": "127.0.0.1",
        },
    ]

    log = worker.log()
    signatures = [headers["webhook-signature"] for _, headers, _ in sent.values()]
    for secret in (SECRET, SECRET.removeprefix("whsec_"), OTHER_SECRET, BODY_MARKER, *signatures):
        assert secret not in log
