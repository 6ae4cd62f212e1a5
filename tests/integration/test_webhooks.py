"""Webhook ingress on the real stack: signatures, channels, errors; what reaches Kafka."""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest

from app.intake.guards import Guards
from app.kafka.topics import EVENTS_DEFAULT, INTAKE
from app.models import DateWindow, payment_id_for
from app.storage.redis_connection import RedisConnection
from tests.pipeline import app_env, fresh_pipeline, read_topic
from tests.stack import Stack, Worker, run_worker, wait_for
from tests.webhook_client import signed, svix_signed

OLD = "whsec_" + "b2xkIHNlY3JldCBiZWZvcmUgdGhlIHJvdGF0aW9u"
NEW = "whsec_" + "bmV3IHNlY3JldCBhZnRlciB0aGUgcm90YXRpb24h"
CARD = "whsec_" + "Y2FyZCBwcm9jZXNzb3IgY2hhbm5lbCBzZWNyZXQ="
WEBHOOK = "/api/v1/payments/webhook"
#: Webhook ids and references of this run: the replay window in Redis outlives a test run.
RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    asyncio.run(fresh_pipeline(stack))
    env = app_env(f"webhooks-{RUN}", WEBHOOK_SECRET=f"{OLD},{NEW}", WEBHOOK_SECRET_CARD=CARD)
    with run_worker(stack, tmp_path_factory.mktemp("webhooks"), **env) as worker:
        worker.wait_web()
        wait_for(lambda: decides(worker), timeout=90, interval=1, what="synchronous answers")
        yield worker


def decides(worker: Worker) -> bool:
    """True once a new notice is answered 201: the record agent owns its partitions."""
    reference = f"WARM-{uuid.uuid4().hex[:12]}"
    body = generic(reference)
    status, _, _ = worker.post(WEBHOOK, body, signed(OLD, body, msg_id=reference))
    return status == 201


def generic(reference: str, **changes: Any) -> bytes:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": 150.25,
        "payment_date": "2026-11-27",
    }
    return json.dumps(body | changes).encode()


def card(reference: str, currency: str = "USD") -> bytes:
    return json.dumps(
        {
            "id": reference,
            "amount_minor": 15025,
            "currency": currency,
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
    body = generic(f"SIG-{RUN}-valid-old")
    flipped = bytearray(generic(f"SIG-{RUN}-flipped"))
    good_for_flipped = signed(OLD, bytes(flipped), msg_id=f"{RUN}-m-flipped")
    flipped[20] ^= 0x01
    cases: dict[str, tuple[str, bytes, dict[str, str], int]] = {
        "valid, old secret": (WEBHOOK, body, signed(OLD, body, msg_id=f"{RUN}-m1"), 201),
        "valid, new secret": (
            WEBHOOK,
            generic(f"SIG-{RUN}-valid-new"),
            signed(NEW, generic(f"SIG-{RUN}-valid-new"), msg_id=f"{RUN}-m2"),
            201,
        ),
        "one flipped bit": (WEBHOOK, bytes(flipped), good_for_flipped, 401),
        "wrong secret": (
            WEBHOOK,
            generic(f"SIG-{RUN}-wrong"),
            signed(CARD, generic(f"SIG-{RUN}-wrong"), msg_id=f"{RUN}-m3"),
            401,
        ),
        "-299 s": (
            WEBHOOK,
            generic(f"SIG-{RUN}-minus-299"),
            signed(OLD, generic(f"SIG-{RUN}-minus-299"), offset=-299, msg_id=f"{RUN}-m4"),
            201,
        ),
        "+299 s": (
            WEBHOOK,
            generic(f"SIG-{RUN}-plus-299"),
            signed(OLD, generic(f"SIG-{RUN}-plus-299"), offset=299, msg_id=f"{RUN}-m5"),
            201,
        ),
        "-301 s": (
            WEBHOOK,
            generic(f"SIG-{RUN}-minus-301"),
            signed(OLD, generic(f"SIG-{RUN}-minus-301"), offset=-301, msg_id=f"{RUN}-m6"),
            401,
        ),
        "+301 s": (
            WEBHOOK,
            generic(f"SIG-{RUN}-plus-301"),
            signed(OLD, generic(f"SIG-{RUN}-plus-301"), offset=301, msg_id=f"{RUN}-m7"),
            401,
        ),
        "junk timestamp": (
            WEBHOOK,
            generic(f"SIG-{RUN}-junk-ts"),
            signed(OLD, generic(f"SIG-{RUN}-junk-ts"), msg_id=f"{RUN}-m8")
            | {"webhook-timestamp": "soon"},
            401,
        ),
        "card, its own secret": (
            f"{WEBHOOK}/card",
            card(f"SIG-{RUN}-card-own"),
            signed(CARD, card(f"SIG-{RUN}-card-own"), msg_id=f"{RUN}-m9"),
            201,
        ),
        "card, the default secret": (
            f"{WEBHOOK}/card",
            card(f"SIG-{RUN}-card-default"),
            signed(OLD, card(f"SIG-{RUN}-card-default"), msg_id=f"{RUN}-m10"),
            401,
        ),
    }
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        missing = generic(f"SIG-{RUN}-missing-{name}")
        cases[f"missing {name}"] = (
            WEBHOOK,
            missing,
            without(signed(OLD, missing, msg_id=f"{RUN}-m-{name}"), name),
            401,
        )

    answers = {
        name: send(worker, path, data, headers) for name, (path, data, headers, _) in cases.items()
    }

    assert answers == {name: expected for name, (_, _, _, expected) in cases.items()}
    accepted = {
        json.loads(data)["reference_number" if path == WEBHOOK else "id"]
        for path, data, _, expected in cases.values()
        if expected == 201
    }
    on_intake = {
        json.loads(value)["reference_number"]
        for _, value in asyncio.run(read_topic(stack, INTAKE))
        if json.loads(value)["reference_number"].startswith(f"SIG-{RUN}-")
    }
    assert on_intake == accepted


def test_a_notice_signed_by_svix_with_svix_headers_is_recorded_under_its_svix_id(
    worker: Worker,
) -> None:
    reference = f"SVIX-{RUN}-only"
    body = generic(reference)
    headers = svix_signed(OLD, body, msg_id=f"{RUN}-svix-1")
    assert not any(name.startswith("webhook-") for name in headers)

    status, first_headers, first = worker.post(WEBHOOK, body, headers)
    assert (status, json.loads(first)["status"]) == (201, "created")
    assert "Idempotent-Replay" not in first_headers
    # The svix-id is the webhook id: the same delivery again gets its first answer.
    status, again_headers, again = worker.post(WEBHOOK, body, headers)
    assert (status, json.loads(again)) == (201, json.loads(first))
    assert again_headers["Idempotent-Replay"] == "true"


def test_with_both_header_families_the_webhook_ones_decide(worker: Worker) -> None:
    good_ours = generic(f"SVIX-{RUN}-both-ours")
    bad_svix = svix_signed(OLD, good_ours, msg_id=f"{RUN}-both-1") | {
        "svix-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    }
    assert (
        send(worker, WEBHOOK, good_ours, bad_svix | signed(OLD, good_ours, msg_id=f"{RUN}-both-1"))
        == 201
    )

    good_svix = generic(f"SVIX-{RUN}-both-svix")
    bad_ours = signed(OLD, good_svix, msg_id=f"{RUN}-both-2") | {
        "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    }
    assert (
        send(
            worker,
            WEBHOOK,
            good_svix,
            svix_signed(OLD, good_svix, msg_id=f"{RUN}-both-2") | bad_ours,
        )
        == 401
    )


def test_an_accepted_notice_answers_its_payment_id_and_reaches_the_intake_as_sent(
    stack: Stack, worker: Worker
) -> None:
    body = card(f"ACC-{RUN}")
    status, _, answer = worker.post(
        f"{WEBHOOK}/card", body, signed(CARD, body, msg_id=f"acc-{RUN}")
    )

    assert status == 201, answer
    assert json.loads(answer) == {
        "status": "created",
        "payment_id": str(payment_id_for(f"ACC-{RUN}")),
    }
    records = [
        json.loads(value)
        for key, value in asyncio.run(read_topic(stack, INTAKE))
        if key == f"ACC-{RUN}".encode()
    ]
    assert len(records) == 1
    assert {
        name: records[0][name] for name in ("amount", "source", "source_id", "payment_channel")
    } == {
        "amount": "150.25",
        "source": "webhook",
        "source_id": f"acc-{RUN}",
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
    answer_status, _, answer = worker.post(
        path, body, signed(OLD, body, msg_id=f"err-{error}-{RUN}")
    )

    assert (answer_status, json.loads(answer)["error"]) == (status, error)
    assert not [value for _, value in asyncio.run(read_topic(stack, INTAKE)) if b'"ERR-' in value]


def test_a_payment_older_than_retention_is_refused_naming_the_limit(
    stack: Stack, worker: Worker
) -> None:
    reference = f"OLD-{RUN}"
    two_years_ago = (datetime.now(UTC) - timedelta(days=730)).date().isoformat()
    body = generic(reference, payment_date=two_years_ago)
    status, _, raw = worker.post(WEBHOOK, body, signed(OLD, body, msg_id=f"old-{RUN}"))

    assert status == 422, raw
    refused = json.loads(raw)
    assert refused["error"] == "invalid_payment"
    [error] = refused["errors"]
    assert error["field"] == "payment_date"
    earliest = DateWindow.of(stack.settings()).earliest_at(datetime.now(UTC))
    assert error["message"] == (
        f"must not be before {earliest.date().isoformat()}: older months are past "
        "PARTITION_RETENTION_MONTHS=12 and are dropped"
    )
    # The next notice, dated inside the window, is recorded as usual.
    good = generic(f"NEW-{RUN}", payment_date=datetime.now(UTC).date().isoformat())
    assert send(worker, WEBHOOK, good, signed(OLD, good, msg_id=f"new-{RUN}")) == 201
    assert not [
        key for key, _ in asyncio.run(read_topic(stack, INTAKE)) if key == reference.encode()
    ]


def answer(worker: Worker, body: bytes, msg_id: str, path: str = WEBHOOK) -> tuple[int, Any, str]:
    """(status, JSON body, Idempotent-Replay header) of one signed POST."""
    status, headers, raw = worker.post(path, body, signed(OLD, body, msg_id=msg_id))
    return status, json.loads(raw), headers.get("Idempotent-Replay", "")


def test_created_then_duplicate_then_conflict_name_the_differing_fields(worker: Worker) -> None:
    reference = f"OUT-{uuid.uuid4().hex[:10]}"
    payment_id = str(payment_id_for(reference))

    created = answer(worker, generic(reference), f"{reference}-1")
    duplicate = answer(worker, generic(reference), f"{reference}-2")
    conflict = answer(worker, generic(reference, amount=150.26), f"{reference}-3")

    assert created == (201, {"status": "created", "payment_id": payment_id}, "")
    assert duplicate == (200, {"status": "duplicate", "payment_id": payment_id}, "")
    assert conflict == (
        409,
        {"status": "conflict", "payment_id": payment_id, "differing_fields": ["amount"]},
        "",
    )


def test_a_replayed_webhook_id_gets_its_answer_again_and_adds_nothing(
    stack: Stack, worker: Worker
) -> None:
    reference = f"RPL-{uuid.uuid4().hex[:10]}"
    first = answer(worker, generic(reference), reference)
    again = answer(worker, generic(reference), reference)
    other_body = answer(worker, generic(reference, amount=9.99), reference)

    assert first[:2] == (201, {"status": "created", "payment_id": str(payment_id_for(reference))})
    assert again == (*first[:2], "true")
    assert (other_body[0], other_body[1]["error"]) == (409, "webhook_id_reused")
    on_intake = [
        key for key, _ in asyncio.run(read_topic(stack, INTAKE)) if key == reference.encode()
    ]
    assert len(on_intake) == 1


def test_two_hundred_concurrent_copies_of_one_new_payment_create_it_once(
    stack: Stack, worker: Worker
) -> None:
    reference = f"RACE-{uuid.uuid4().hex[:10]}"
    body = generic(reference)

    async def post_all() -> list[tuple[int, dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:

            async def post(n: int) -> tuple[int, dict[str, Any]]:
                headers = signed(OLD, body, msg_id=f"{reference}-{n}")
                async with session.post(worker.base_url + WEBHOOK, data=body, headers=headers) as r:
                    return r.status, await r.json()

            return await asyncio.gather(*(post(n) for n in range(200)))

    answers = asyncio.run(post_all())

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 199 + [201], statuses
    assert {body["payment_id"] for _, body in answers} == {str(payment_id_for(reference))}
    rows, events = asyncio.run(recorded(stack, reference))
    assert (rows, events) == (1, 1)


async def recorded(stack: Stack, reference: str) -> tuple[int, int]:
    """(payments rows, payment.events events) for ``reference``."""
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        rows = await connection.fetchval(
            "SELECT count(*) FROM payment_service.payments WHERE reference_number = $1", reference
        )
    finally:
        await connection.close()
    events = [
        value
        for _, value in await read_topic(stack, EVENTS_DEFAULT)
        if json.loads(value)["payment"]["reference_number"] == reference
    ]
    return rows, len(events)


def test_without_redis_webhooks_are_still_recorded(stack: Stack, worker: Worker) -> None:
    if not stack.native:
        pytest.skip("stopping Redis needs scripts/stack")
    references = [f"NORED-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    stack.script("down", "redis")
    try:
        answers = [answer(worker, generic(reference), reference) for reference in references]
    finally:
        stack.script("up", "redis")

    assert [(status, body["status"]) for status, body, _ in answers] == [(202, "accepted")] * 3
    wait_for(
        lambda: all(asyncio.run(recorded(stack, r)) == (1, 1) for r in references),
        timeout=60,
        what="the notices accepted without Redis to be recorded",
    )


def test_without_kafka_the_answer_is_503_with_retry_after_and_recovers(
    stack: Stack, worker: Worker
) -> None:
    if not stack.native:
        pytest.skip("stopping Kafka needs scripts/stack")
    reference = f"NOKAFKA-{uuid.uuid4().hex[:10]}"
    stack.script("down", "kafka")
    try:
        status, headers, raw = worker.post(
            WEBHOOK, generic(reference), signed(OLD, generic(reference), msg_id=reference)
        )
    finally:
        stack.script("up", "kafka")

    assert (status, json.loads(raw)["error"]) == (503, "unavailable")
    assert int(headers["Retry-After"]) >= 1
    # The sender retries (same id: the failed claim was released) and is recorded.
    wait_for(
        lambda: answer(worker, generic(reference), reference)[0] in (201, 202),
        timeout=120,
        interval=2,
        what="a retry after Kafka is back to be accepted",
    )
    wait_for(
        lambda: asyncio.run(recorded(stack, reference)) == (1, 1),
        timeout=120,
        what="the retried notice to be recorded once",
    )


def test_one_webhook_id_on_two_channels_is_two_senders_both_recorded(
    stack: Stack, worker: Worker
) -> None:
    shared_id = f"SHARED-{uuid.uuid4().hex[:10]}"
    on_generic, on_card = f"{shared_id}-G", f"{shared_id}-C"

    generic_answer = answer(worker, generic(on_generic), shared_id)
    status, _, raw = worker.post(
        WEBHOOK + "/card", card(on_card), signed(CARD, card(on_card), msg_id=shared_id)
    )

    assert (generic_answer[0], generic_answer[1]["status"]) == (201, "created")
    assert (status, json.loads(raw)["status"]) == (201, "created")
    assert asyncio.run(recorded(stack, on_generic)) == (1, 1)
    assert asyncio.run(recorded(stack, on_card)) == (1, 1)


def test_a_generic_body_claiming_the_card_channel_is_422_and_later_notices_are_recorded(
    stack: Stack, worker: Worker
) -> None:
    forged = f"FORGED-{uuid.uuid4().hex[:10]}"
    good = f"GOOD-{uuid.uuid4().hex[:10]}"

    refused = answer(worker, generic(forged, payment_channel="card"), forged)
    after = answer(worker, generic(good, payment_channel="branch_cash"), good)

    assert refused[0] == 422
    assert refused[1]["errors"][0]["field"] == "payment_channel"
    assert "/api/v1/payments/webhook/card" in refused[1]["errors"][0]["message"]
    assert (after[0], after[1]["status"]) == (201, "created")
    assert asyncio.run(recorded(stack, forged)) == (0, 0)
    assert asyncio.run(recorded(stack, good)) == (1, 1)


def test_a_publish_kafka_does_not_acknowledge_in_time_is_503_and_the_retry_gets_its_decision(
    stack: Stack, worker: Worker
) -> None:
    if not stack.native:
        pytest.skip("pausing Kafka needs scripts/stack")
    reference = f"HUNG-{uuid.uuid4().hex[:10]}"
    stack.script("pause", "kafka")
    try:
        status, headers, raw = worker.post(
            WEBHOOK, generic(reference), signed(OLD, generic(reference), msg_id=reference)
        )
    finally:
        stack.script("resume", "kafka")

    assert (status, json.loads(raw)["error"]) == (503, "unavailable")
    assert int(headers["Retry-After"]) >= 1
    # The send was buffered and reaches the broker once it wakes: the payment is recorded.
    wait_for(
        lambda: asyncio.run(recorded(stack, reference)) == (1, 1),
        timeout=60,
        what="the unacknowledged send to be recorded",
    )
    # The sender retries with the same id: it hears its own payment's decision.
    retry = answer(worker, generic(reference), reference)
    assert (retry[0], retry[1]["status"]) == (201, "created"), retry
    assert asyncio.run(recorded(stack, reference)) == (1, 1)


# --- guards: a worker of its own, behind a "proxy" on loopback ------------------------

PROXY_CLIENTS = "198.51.100.0/24"
#: IPv6 clients behind the proxy: their rate is counted per /64.
PROXY_CLIENTS_V6 = "2001:db8::/32"


@pytest.fixture(scope="module")
def guarded(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = app_env(
        f"guards-{RUN}",
        WEBHOOK_SECRET=OLD,
        WEBHOOK_IP_ALLOWLIST=f"127.0.0.1/32,{PROXY_CLIENTS},{PROXY_CLIENTS_V6}",
        WEBHOOK_TRUSTED_PROXIES="127.0.0.1/32",
        WEBHOOK_RATE_LIMIT_PER_SOURCE="5",
        WEBHOOK_MAX_BODY_BYTES="2048",
    )
    with run_worker(stack, tmp_path_factory.mktemp("guards"), **env) as worker:
        worker.wait_web()
        yield worker


def from_client(worker: Worker, address: str, body: bytes = b"{}") -> tuple[int, dict[str, str]]:
    status, headers, _ = worker.post(
        WEBHOOK, body, signed(OLD, body, msg_id=uuid.uuid4().hex) | {"X-Forwarded-For": address}
    )
    return status, headers


def test_addresses_outside_the_allowlist_get_403_before_anything_else(guarded: Worker) -> None:
    assert from_client(guarded, "203.0.113.7")[0] == 403
    # A client cannot talk its way in: only the hop the trusted proxy saw counts.
    assert from_client(guarded, "198.51.100.9, 203.0.113.7")[0] == 403
    assert from_client(guarded, "198.51.100.10")[0] == 422  # allowed; the body is then checked


def raw_post(worker: Worker, headers: list[tuple[str, str | bytes]], body: bytes = b"{}") -> int:
    """POST with header lines as given: a name twice, or bytes that are not UTF-8."""
    host, port = worker.base_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("POST", WEBHOOK)
        for name, value in [("Content-Type", "application/json"), *headers]:
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        return connection.getresponse().status
    finally:
        connection.close()


def test_every_forwarded_for_line_counts(guarded: Worker) -> None:
    # HAProxy's option forwardfor appends its own line: the client's forged one comes first.
    body = b"{}"
    signature = list(signed(OLD, body, msg_id=uuid.uuid4().hex).items())
    forged = [("X-Forwarded-For", "198.51.100.40"), ("X-Forwarded-For", "203.0.113.7")]
    assert raw_post(guarded, [*signature, *forged], body) == 403
    honest = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.41")]
    assert raw_post(guarded, [*signature, *honest], body) == 422  # allowed; the body checked


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_a_signature_header_that_is_not_utf8_is_401(guarded: Worker, header: str) -> None:
    body = b"{}"
    lines: list[tuple[str, str | bytes]] = [
        (name, value.encode() + b"\xff\xfe" if name == header else value)
        for name, value in signed(OLD, body, msg_id=uuid.uuid4().hex).items()
    ]
    assert raw_post(guarded, [*lines, ("X-Forwarded-For", "198.51.100.42")], body) == 401


def test_an_ipv6_source_is_rate_limited_per_64(guarded: Worker) -> None:
    noisy = [from_client(guarded, f"2001:db8:1:2::{host:x}")[0] for host in range(1, 21)]
    quiet = [from_client(guarded, f"2001:db8:1:3::{host:x}")[0] for host in range(1, 4)]
    assert noisy.count(429) >= 10  # 20 addresses of one /64: one source
    assert quiet == [422] * 3


def test_a_noisy_source_is_rate_limited_and_another_is_not(guarded: Worker) -> None:
    noisy = [from_client(guarded, "198.51.100.20") for _ in range(20)]
    quiet = [from_client(guarded, "198.51.100.21") for _ in range(3)]

    limited = [headers for status, headers in noisy if status == 429]
    assert len(limited) >= 10  # at most 2 windows of 5 in so short a burst
    assert all(int(headers["Retry-After"]) >= 1 for headers in limited)
    assert [status for status, _ in quiet] == [422] * 3


async def test_the_rate_script_counts_each_request_of_a_tick_once(stack: Stack) -> None:
    # The guards over the stack's own Redis: one tick's counts in one script call.
    settings = stack.settings().model_copy(update={"webhook_rate_limit_per_source": 3})
    redis = RedisConnection(settings)
    await redis.start()
    try:
        limited = Guards(settings, redis)
        source = ipaddress.ip_address(f"198.51.100.{uuid.uuid4().int % 200 + 50}")
        await asyncio.sleep(1.1 - time.time() % 1)  # early in a 1 s window: one window
        waits = await asyncio.gather(*(limited.retry_after(source) for _ in range(5)))
        keys = await redis.client.keys(f"payments:rate:{source}:*")
        ttls = [await redis.client.ttl(key) for key in keys]
    finally:
        await redis.stop()

    assert waits[:3] == [None, None, None]
    assert all(wait is not None and wait >= 1 for wait in waits[3:])
    assert len(keys) == 1
    assert 0 < ttls[0] <= 2  # a 1 s window's count outlives it by a second


def test_a_body_over_the_limit_gets_413_unread(guarded: Worker) -> None:
    large = b'{"metadata": "' + b"x" * 2100 + b'"}'
    assert from_client(guarded, "198.51.100.30", large)[0] == 413
    fits = b'{"metadata": "' + b"x" * 1900 + b'"}'
    assert from_client(guarded, "198.51.100.31", fits)[0] == 422


def test_a_chunked_body_over_the_limit_gets_413(guarded: Worker) -> None:
    large = b'{"metadata": "' + b"x" * 5000 + b'"}'
    headers = signed(OLD, large, msg_id=uuid.uuid4().hex)

    async def post() -> int:
        async def chunks() -> Any:
            for start in range(0, len(large), 1000):
                yield large[start : start + 1000]

        url = guarded.base_url + WEBHOOK
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=chunks(), headers=headers) as response,
        ):
            return response.status

    assert asyncio.run(post()) == 413


def test_one_charge_in_another_currency_is_a_conflict_naming_the_currency(
    stack: Stack, worker: Worker
) -> None:
    reference = f"CUR-{uuid.uuid4().hex[:10]}"
    path = f"{WEBHOOK}/card"

    def post(body: bytes, msg_id: str) -> tuple[int, Any]:
        status, _, raw = worker.post(path, body, signed(CARD, body, msg_id=msg_id))
        return status, json.loads(raw)

    created = post(card(reference, "USD"), f"{reference}-usd")
    conflict = post(card(reference, "EUR"), f"{reference}-eur")  # same id, same amount_minor
    duplicate = post(card(reference, "USD"), f"{reference}-usd-again")
    after = post(card(f"{reference}-next", "EUR"), f"{reference}-next")

    payment_id = str(payment_id_for(reference))
    assert created == (201, {"status": "created", "payment_id": payment_id})
    assert conflict == (
        409,
        {"status": "conflict", "payment_id": payment_id, "differing_fields": ["currency"]},
    )
    assert duplicate == (200, {"status": "duplicate", "payment_id": payment_id})
    assert after[0] == 201, after

    async def rows() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(**stack.db_connect_kwargs())
        try:
            return await connection.fetch(
                "SELECT reference_number, currency, amount FROM payment_service.payments"
                " WHERE reference_number LIKE $1 ORDER BY reference_number",
                f"{reference}%",
            )
        finally:
            await connection.close()

    assert [tuple(row) for row in asyncio.run(rows())] == [
        (reference, "USD", Decimal("150.25")),
        (f"{reference}-next", "EUR", Decimal("150.25")),
    ]
    events = [
        json.loads(value)["payment"]
        for key, value in asyncio.run(read_topic(stack, EVENTS_DEFAULT))
        if b'"reference_number":"' + reference.encode() in value
    ]
    assert sorted((event["reference_number"], event["currency"]) for event in events) == [
        (reference, "USD"),
        (f"{reference}-next", "EUR"),
    ]
