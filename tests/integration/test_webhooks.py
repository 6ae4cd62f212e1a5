"""Webhook ingress on the real stack: signatures, channels, errors; what reaches Kafka."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app.models import payment_id_for
from app.topics import INTAKE
from tests.pipeline import app_env, fresh_pipeline, read_topic
from tests.stack import Stack, Worker, run_worker
from tests.webhook_client import signed

OLD = "whsec_" + "b2xkIHNlY3JldCBiZWZvcmUgdGhlIHJvdGF0aW9u"
NEW = "whsec_" + "bmV3IHNlY3JldCBhZnRlciB0aGUgcm90YXRpb24h"
CARD = "whsec_" + "Y2FyZCBwcm9jZXNzb3IgY2hhbm5lbCBzZWNyZXQ="
WEBHOOK = "/api/v1/payments/webhook"


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    asyncio.run(fresh_pipeline(stack))
    env = app_env("webhooks", WEBHOOK_SECRET=f"{OLD},{NEW}", WEBHOOK_SECRET_CARD=CARD)
    with run_worker(stack, tmp_path_factory.mktemp("webhooks"), **env) as worker:
        worker.wait_web()
        yield worker


def generic(reference: str) -> bytes:
    return json.dumps(
        {
            "reference_number": reference,
            "loan_account_number": "LN0001234",
            "cif": "C000987",
            "amount": 150.25,
            "payment_date": "2026-11-27",
        }
    ).encode()


def card(reference: str) -> bytes:
    return json.dumps(
        {
            "id": reference,
            "amount_minor": 15025,
            "currency": "USD",
            "captured_at": "2026-11-27T16:45:10+07:00",
            "loan_account_number": "LN0001234",
            "cif": "C000987",
        }
    ).encode()


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key != name}


def send(worker: Worker, path: str, body: bytes, headers: dict[str, str]) -> int:
    status, _, _ = worker.post(path, body, headers)
    return status


def test_signature_matrix_and_only_accepted_notices_reach_the_intake(
    stack: Stack, worker: Worker
) -> None:
    body = generic("SIG-valid-old")
    flipped = bytearray(generic("SIG-flipped"))
    good_for_flipped = signed(OLD, bytes(flipped), msg_id="m-flipped")
    flipped[20] ^= 0x01
    cases: dict[str, tuple[str, bytes, dict[str, str], int]] = {
        "valid, old secret": (WEBHOOK, body, signed(OLD, body, msg_id="m1"), 202),
        "valid, new secret": (
            WEBHOOK,
            generic("SIG-valid-new"),
            signed(NEW, generic("SIG-valid-new"), msg_id="m2"),
            202,
        ),
        "one flipped bit": (WEBHOOK, bytes(flipped), good_for_flipped, 401),
        "wrong secret": (
            WEBHOOK,
            generic("SIG-wrong"),
            signed(CARD, generic("SIG-wrong"), msg_id="m3"),
            401,
        ),
        "-299 s": (
            WEBHOOK,
            generic("SIG-minus-299"),
            signed(OLD, generic("SIG-minus-299"), offset=-299, msg_id="m4"),
            202,
        ),
        "+299 s": (
            WEBHOOK,
            generic("SIG-plus-299"),
            signed(OLD, generic("SIG-plus-299"), offset=299, msg_id="m5"),
            202,
        ),
        "-301 s": (
            WEBHOOK,
            generic("SIG-minus-301"),
            signed(OLD, generic("SIG-minus-301"), offset=-301, msg_id="m6"),
            401,
        ),
        "+301 s": (
            WEBHOOK,
            generic("SIG-plus-301"),
            signed(OLD, generic("SIG-plus-301"), offset=301, msg_id="m7"),
            401,
        ),
        "junk timestamp": (
            WEBHOOK,
            generic("SIG-junk-ts"),
            signed(OLD, generic("SIG-junk-ts"), msg_id="m8") | {"webhook-timestamp": "soon"},
            401,
        ),
        "card, its own secret": (
            f"{WEBHOOK}/card",
            card("SIG-card-own"),
            signed(CARD, card("SIG-card-own"), msg_id="m9"),
            202,
        ),
        "card, the default secret": (
            f"{WEBHOOK}/card",
            card("SIG-card-default"),
            signed(OLD, card("SIG-card-default"), msg_id="m10"),
            401,
        ),
    }
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        missing = generic(f"SIG-missing-{name}")
        cases[f"missing {name}"] = (
            WEBHOOK,
            missing,
            without(signed(OLD, missing, msg_id=f"m-{name}"), name),
            401,
        )

    answers = {
        name: send(worker, path, data, headers) for name, (path, data, headers, _) in cases.items()
    }

    assert answers == {name: expected for name, (_, _, _, expected) in cases.items()}
    accepted = {
        json.loads(data)["reference_number" if path == WEBHOOK else "id"]
        for path, data, _, expected in cases.values()
        if expected == 202
    }
    on_intake = {
        json.loads(value)["reference_number"]
        for _, value in asyncio.run(read_topic(stack, INTAKE))
        if json.loads(value)["reference_number"].startswith("SIG-")
    }
    assert on_intake == accepted


def test_an_accepted_notice_answers_its_payment_id_and_reaches_the_intake_as_sent(
    stack: Stack, worker: Worker
) -> None:
    body = card("ACC-card-1")
    status, _, answer = worker.post(f"{WEBHOOK}/card", body, signed(CARD, body, msg_id="acc-1"))

    assert status == 202, answer
    assert json.loads(answer) == {
        "status": "accepted",
        "payment_id": str(payment_id_for("ACC-card-1")),
    }
    records = [
        json.loads(value)
        for key, value in asyncio.run(read_topic(stack, INTAKE))
        if key == b"ACC-card-1"
    ]
    assert len(records) == 1
    assert {
        name: records[0][name] for name in ("amount", "source", "source_id", "payment_channel")
    } == {
        "amount": "150.25",
        "source": "webhook",
        "source_id": "acc-1",
        "payment_channel": "card",
    }


@pytest.mark.parametrize(
    ("path", "body", "status", "error"),
    [
        (f"{WEBHOOK}/paypal", generic("ERR-channel"), 404, "unknown_channel"),
        (WEBHOOK, b'{"reference_number": "ERR-json",', 400, "invalid_json"),
        (WEBHOOK, b'{"amount": 1, "amount": 2}', 400, "invalid_json"),
        (
            WEBHOOK,
            generic("ERR-future").replace(b"2026-11-27", b"2999-01-01"),
            422,
            "invalid_payment",
        ),
        (WEBHOOK, json.dumps({"reference_number": "ERR-missing"}).encode(), 422, "invalid_body"),
    ],
)
def test_client_errors_are_4xx_with_a_reason_and_reach_nothing(
    stack: Stack, worker: Worker, path: str, body: bytes, status: int, error: str
) -> None:
    answer_status, _, answer = worker.post(path, body, signed(OLD, body, msg_id=f"err-{error}"))

    assert (answer_status, json.loads(answer)["error"]) == (status, error)
    assert not [value for _, value in asyncio.run(read_topic(stack, INTAKE)) if b'"ERR-' in value]
