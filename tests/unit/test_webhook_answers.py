"""One answer per webhook-id, whatever the timing; ids kept per endpoint (offline, with fakes).

The view (web/webhooks.py) runs for real over a fake decision board, publisher
and record agent; the board's Redis keys are checked over a fake pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import REGISTRY

from app.intake.channels import GENERIC
from app.intake.guards import Guards
from app.intake.signatures import Verifier
from app.intake.webhook_body import parse_body, record_for
from app.kafka.codecs import decode_record
from app.models import DateWindow, Decision, KnownReference, endpoint_of, payment_id_for
from app.recording.decisions import (
    POST_SCRIPT,
    Answer,
    Claim,
    DecisionBoard,
    hot_cache_entry,
    hot_cache_fingerprint,
    hot_cache_keys,
)
from app.recording.reference_cache import MemoryCache
from app.settings import Settings
from app.storage.redis_connection import RedisConnection
from tests.unit.post_script_redis import FakeRedis
from tests.webhook_client import signed
from web.webhooks import Reply, answer_webhook

WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
CARD_SECRET = "whsec_" + "Y2FyZCBwcm9jZXNzb3IgY2hhbm5lbCBzZWNyZXQ="


class FakeBoard:
    """app.recording.decisions.DecisionBoard's view side over dicts keyed like its Redis keys."""

    def __init__(self, cache_seconds: int | None = None) -> None:
        self.bodies: dict[tuple[str, str], str] = {}
        self.decisions: dict[tuple[str, str], Answer] = {}
        self.waiting: dict[tuple[str, str], list[asyncio.Future[Answer]]] = {}
        #: The hot cache, reference → recorded fingerprint (read only when cache_seconds is set).
        self.cache_seconds = cache_seconds
        self.hot: dict[str, str] = {}

    async def claim(self, endpoint: str, webhook_id: str, body_hash: str, reference: str) -> Claim:
        key = (endpoint, webhook_id)
        cached = self.hot.get(reference) if self.cache_seconds is not None else None
        if key not in self.bodies:
            self.bodies[key] = body_hash
            return Claim("new", fingerprint=cached)
        if self.bodies[key] != body_hash:
            return Claim("reused")
        return Claim("seen", self.decisions.get(key), cached)

    def expect(self, endpoint: str, webhook_id: str) -> asyncio.Future[Answer]:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.waiting.setdefault((endpoint, webhook_id), []).append(future)
        return future

    def forget(self, endpoint: str, webhook_id: str, future: asyncio.Future[Answer]) -> None:
        self.waiting.get((endpoint, webhook_id), []).remove(future)

    async def remember(self, endpoint: str, webhook_id: str, answer: Answer) -> None:
        self.decisions.setdefault((endpoint, webhook_id), answer)

    async def stored(self, endpoint: str, webhook_id: str) -> Answer | None:
        return self.decisions.get((endpoint, webhook_id))


@dataclass
class FakeAgent:
    """Decides intake records as the record agent does: first carrier created, then duplicate."""

    board: FakeBoard
    announce: bool = True
    pending: list[bytes] = field(default_factory=list)
    recorded: set[str] = field(default_factory=set)

    def decide(self) -> None:
        for value in self.pending:
            record = decode_record(value)
            outcome = "duplicate" if record.reference_number in self.recorded else "created"
            self.recorded.add(record.reference_number)
            answer = Answer.of(
                Decision(
                    reference_number=record.reference_number,
                    outcome=outcome,
                    payment_id=record.payment_id,
                    source=record.source,
                    source_id=record.source_id,
                    channel=record.payment_channel,
                )
            )
            key = (endpoint_of(record.payment_channel), record.source_id)
            self.board.decisions.setdefault(key, answer)
            if self.announce:
                for future in self.board.waiting.get(key, []):
                    future.set_result(answer)
        self.pending.clear()


@dataclass
class FakePublisher:
    """Kafka: every send is written at once; acknowledged after ``ack_delay`` seconds."""

    agent: FakeAgent
    ack_delay: float = 0.0
    published: int = 0

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        self.published += len(messages)
        self.agent.pending += [value for _, value in messages]
        if self.ack_delay:
            await asyncio.sleep(self.ack_delay)  # the broker wrote it; the ack is late
        else:
            self.agent.decide()


class OpenGuards:
    def client(self, peer: str | None, forwarded_for: str | None) -> None:
        return None

    def allowed(self, client: object) -> bool:
        return True

    async def retry_after(self, client: object) -> None:
        return None

    @contextlib.contextmanager
    def admitted(self) -> Iterator[bool]:
        yield True


class NoCounts:
    def add(self, channel: str, status: int, outcome: str, seconds: float) -> None:
        pass


@dataclass
class Ingress:
    settings: Settings
    decisions: FakeBoard
    publisher: FakePublisher
    guards: OpenGuards = field(default_factory=OpenGuards)
    date_window: DateWindow = field(default_factory=lambda: WINDOW)
    webhook_counts: NoCounts = field(default_factory=NoCounts)
    memory: MemoryCache | None = None
    verifier: Verifier = field(init=False)

    def __post_init__(self) -> None:
        self.verifier = Verifier(self.settings)


def ingress(
    *,
    announce: bool = True,
    ack_delay: float = 0.0,
    memory: MemoryCache | None = None,
    cache_seconds: int | None = None,
) -> Ingress:
    settings = Settings(
        webhook_secret=SECRET,  # type: ignore[arg-type]  # parsed from text, as from the env
        webhook_channel_secrets={"card": [CARD_SECRET]},  # type: ignore[dict-item]
        webhook_timeout_ms=100,
        audit_log=False,
    )
    board = FakeBoard(cache_seconds)
    publisher = FakePublisher(FakeAgent(board, announce), ack_delay)
    return Ingress(settings, board, publisher, memory=memory)


@dataclass
class Body:
    """An aiohttp request as answer_webhook reads it."""

    raw: bytes

    async def read(self, size: int) -> bytes:
        chunk, self.raw = self.raw[:size], self.raw[size:]
        return chunk


@dataclass
class Request:
    content: Body
    headers: CIMultiDict[str]
    remote: str = "127.0.0.1"
    content_length: int | None = None

    def __post_init__(self) -> None:
        self.headers = CIMultiDict(self.headers)  # aiohttp's: one name may come on several lines


async def post(
    via: Ingress, body: dict[str, Any], webhook_id: str, channel: str | None = None
) -> Reply:
    raw = json.dumps(body).encode()
    secret = CARD_SECRET if channel == "card" else SECRET
    request = Request(Body(raw), CIMultiDict(signed(secret, raw, msg_id=webhook_id)))
    return await answer_webhook(cast(Any, via), cast(web.Request, request), channel)


def generic(reference: str, **changes: Any) -> dict[str, Any]:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": "150.25",
        "payment_date": "2026-11-27",
    }
    return body | changes


def card(reference: str) -> dict[str, Any]:
    return {
        "id": reference,
        "amount_minor": 15025,
        "currency": "USD",
        "captured_at": "2026-11-27T16:45:10+07:00",
        "loan_account_number": "LN0001234",
        "cif": "C000987",
    }


async def test_a_timed_out_publish_is_503_and_the_retry_gets_its_own_decision() -> None:
    via = ingress(ack_delay=1.0)  # the record reaches Kafka; its ack comes after the timeout

    first = await post(via, generic("SLOW-1"), "msg-slow")
    via.publisher.agent.decide()  # the record agent decides the record that got through
    via.publisher.ack_delay = 0.0
    retry = await post(via, generic("SLOW-1"), "msg-slow")

    assert (first.status, first.body["error"]) == (503, "unavailable")
    assert first.headers == {"Retry-After": "5"}
    assert (retry.status, retry.body["status"]) == (201, "created")
    assert retry.body["payment_id"] == str(payment_id_for("SLOW-1"))


async def test_a_missed_announcement_is_answered_from_the_stored_decision() -> None:
    via = ingress(announce=False)

    reply = await post(via, generic("MISSED-1"), "msg-missed")

    assert (reply.status, reply.body["status"]) == (201, "created")


async def test_one_webhook_id_on_two_channels_is_two_senders() -> None:
    via = ingress()

    on_generic = await post(via, generic("SHARED-G"), "msg-shared")
    on_card = await post(via, card("SHARED-C"), "msg-shared", channel="card")

    assert (on_generic.status, on_generic.body["status"]) == (201, "created")
    assert (on_card.status, on_card.body["status"]) == (201, "created")
    assert on_card.body["payment_id"] == str(payment_id_for("SHARED-C"))


async def test_the_generic_body_cannot_speak_for_a_channel_with_an_endpoint() -> None:
    via = ingress()

    for claimed in ("card", "Bank Transfer", " bank-transfer "):
        reply = await post(via, generic("FAKE-CARD", payment_channel=claimed), f"msg-{claimed}")
        assert reply.status == 422, reply.body
        assert reply.body["errors"][0]["field"] == "payment_channel"
    after = await post(via, generic("CASH-1", payment_channel="branch_cash"), "msg-cash")

    assert "/api/v1/payments/webhook/card" in str(
        (await post(via, generic("X", payment_channel="card"), "msg-x")).body
    )
    assert (after.status, after.body["status"]) == (201, "created")
    assert via.publisher.agent.recorded == {"CASH-1"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


MEMORY_REQUESTS = "payments_cache_requests_total"


def duplicates_counted() -> float:
    return sample("payments_decisions_total", source="webhook", outcome="duplicate")


async def test_a_duplicate_the_redis_hot_cache_answers_is_counted_once_as_a_decision() -> None:
    via = ingress(cache_seconds=86400)
    record = await post(via, generic("HOT-1"), "msg-hot-1")
    via.decisions.hot["HOT-1"] = fingerprint_of_body(generic("HOT-1"))
    before = (
        duplicates_counted(),
        sample("payments_cache_requests_total", layer="redis", result="hit"),
    )

    reply = await post(via, generic("HOT-1"), "msg-hot-2")
    replay = await post(via, generic("HOT-1"), "msg-hot-2")  # its answer again: no new decision

    assert (record.status, reply.status, reply.body["status"]) == (201, 200, "duplicate")
    assert replay.headers == {"Idempotent-Replay": "true"}
    assert via.publisher.agent.recorded == {"HOT-1"}  # the duplicate never reached the agent
    after = (
        duplicates_counted(),
        sample("payments_cache_requests_total", layer="redis", result="hit"),
    )
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


async def test_the_memory_cache_answers_a_duplicate_without_the_agent() -> None:
    via = ingress(memory=MemoryCache(10))
    created = await post(via, generic("MEM-1"), "msg-mem-1")
    before = (duplicates_counted(), sample(MEMORY_REQUESTS, layer="memory", result="hit"))

    duplicate = await post(via, generic("MEM-1"), "msg-mem-2")
    other = await post(via, generic("MEM-1", amount="1.00"), "msg-mem-3")

    assert (created.status, duplicate.status, duplicate.body["status"]) == (201, 200, "duplicate")
    assert duplicate.body["payment_id"] == str(payment_id_for("MEM-1"))
    after = (duplicates_counted(), sample(MEMORY_REQUESTS, layer="memory", result="hit"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2)
    # The first and the one with other fields went to the agent (it names a conflict's fields).
    assert via.publisher.published == 2
    assert other.status == 200  # the fake agent only says it knew the reference


async def test_memory_never_answers_a_retry_of_the_delivery_that_created_the_payment() -> None:
    via = ingress(memory=MemoryCache(10))
    body = generic("MEM-RETRY")
    # The first delivery was published and recorded; in the worker the record agent caches
    # the reference before it stores the decision, and the retry comes in between.
    raw = json.dumps(body).encode()
    via.decisions.bodies["generic", "msg-retry"] = hashlib.sha256(raw).hexdigest()
    cached = KnownReference(fingerprint_of_body(body), payment_id_for("MEM-RETRY"))
    cast(MemoryCache, via.memory).put("MEM-RETRY", cached)

    retry = await post(via, body, "msg-retry")
    another = await post(via, body, "msg-another")

    assert (retry.status, retry.body["status"]) == (201, "created")  # its own record's decision
    assert (another.status, another.body["status"]) == (200, "duplicate")  # from memory
    assert via.publisher.published == 1


def fingerprint_of_body(body: dict[str, Any]) -> str:
    """The fingerprint of the record a generic webhook body becomes."""
    raw = json.dumps(body).encode()
    now = datetime.now(UTC)
    return record_for(
        GENERIC, parse_body(raw), webhook_id="x", received_at=now, window=WINDOW
    ).fingerprint


def decision(reference: str, outcome: str, channel: str | None, webhook_id: str) -> Decision:
    return Decision(
        reference_number=reference,
        outcome=outcome,  # type: ignore[arg-type]  # one of the Outcome literals
        payment_id=payment_id_for(reference),
        source="webhook",
        source_id=webhook_id,
        channel=channel,
    )


async def test_decisions_are_stored_and_announced_under_their_endpoint() -> None:
    redis = FakeRedis()
    board = DecisionBoard(cast(RedisConnection, redis))
    decided = [
        decision(reference, "created", channel, "msg-1")
        for reference, channel in (("C-1", "card"), ("G-1", "branch_cash"), ("N-1", None))
    ]

    await board.post(decided, {})

    assert redis.keys == [
        "payments:card:decision:msg-1",
        "payments:generic:decision:msg-1",
        "payments:generic:decision:msg-1",
    ]
    (announcement,) = redis.announcements
    assert [key for key, _ in announcement] == ["card:msg-1", "generic:msg-1", "generic:msg-1"]


async def test_a_second_decision_for_an_id_is_announced_as_the_first() -> None:
    redis = FakeRedis()
    board = DecisionBoard(cast(RedisConnection, redis))

    await board.post([decision("R-1", "created", None, "msg-1")], {})
    # The sender's retry was published again and decided as a duplicate of itself.
    await board.post([decision("R-1", "duplicate", None, "msg-1")], {})

    heard = [Answer.decode(answer).status for ((_, answer),) in redis.announcements]
    assert heard == [201, 201]


async def test_a_decision_is_stored_before_its_reference_is_cached() -> None:
    redis = FakeRedis()
    board = DecisionBoard(cast(RedisConnection, redis))
    created = decision("R-1", "created", None, "msg-1")

    await board.post([created], {"R-1": KnownReference("fingerprint", created.payment_id)})

    # A request that sees the reference cached must see its own id's decision too:
    # the script stores the answers before it writes the cache.
    assert POST_SCRIPT.index("'SET'") < POST_SCRIPT.index("'HSET'") < POST_SCRIPT.index("PUBLISH")
    assert redis.ops == ["set", "hset", "expire", "publish"]
    (cache_key,) = redis.hashes
    assert cache_key.startswith("payments:references:")
    assert redis.hashes[cache_key]["R-1"].startswith("fingerprint ")


@pytest.mark.parametrize("header", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_a_signature_header_that_is_not_utf8_is_401(header: str) -> None:
    via = ingress()
    raw = json.dumps(generic("REF-NOT-UTF8")).encode()
    headers = signed(SECRET, raw, msg_id="msg_not_utf8")
    headers[header] += b"\xff\xfe".decode("utf-8", "surrogateescape")  # as aiohttp decodes it
    reply = await answer_webhook(
        cast(Any, via), cast(web.Request, Request(Body(raw), headers)), None
    )
    assert reply.status == 401


async def test_a_forged_forwarded_for_line_before_the_proxys_own_is_not_believed() -> None:
    via = ingress()
    via.guards = Guards(  # type: ignore[assignment]
        Settings(
            webhook_ip_allowlist="198.51.100.0/24",  # type: ignore[arg-type]
            webhook_trusted_proxies="10.0.0.0/24",  # type: ignore[arg-type]
        ),
        cast(RedisConnection, None),
    )
    raw = json.dumps(generic("REF-FORGED-XFF")).encode()
    headers = CIMultiDict(signed(SECRET, raw, msg_id="msg_forged_xff"))
    headers.add("X-Forwarded-For", "198.51.100.7")  # the client's own line: allowlisted
    headers.add("X-Forwarded-For", "6.6.6.6")  # the proxy's line: who connected to it
    request = Request(Body(raw), headers, remote="10.0.0.2")
    reply = await answer_webhook(cast(Any, via), cast(web.Request, request), None)
    assert reply.status == 403


async def test_webhooks_switched_off_answer_503_with_retry_after_and_record_nothing() -> None:
    via = ingress()
    via.settings = via.settings.model_copy(update={"webhooks_enabled": False})

    reply = await post(via, generic("OFF-1"), "msg-off")

    assert (reply.status, reply.body["error"]) == (503, "disabled")
    assert reply.headers == {"Retry-After": "5"}
    assert "WEBHOOKS_ENABLED" in reply.body["message"]
    assert via.publisher.agent.pending == []
    assert via.publisher.agent.recorded == set()


async def test_with_the_redis_cache_off_decisions_are_stored_and_nothing_is_cached() -> None:
    redis = FakeRedis()
    board = DecisionBoard(cast(RedisConnection, redis), cache_seconds=None)
    created = decision("R-1", "created", None, "msg-1")

    await board.post([created], {"R-1": KnownReference("fingerprint", created.payment_id)})

    assert redis.ops == ["set", "publish"]  # the stored answer (coordination), no hot cache
    assert len(redis.announcements) == 1


def test_a_hot_cache_entry_answers_for_redis_ttl_seconds_then_misses() -> None:
    cached_at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    entry = hot_cache_entry("ab" * 32, cached_at)

    assert hot_cache_fingerprint(entry, cached_at + timedelta(seconds=600), 600) == "ab" * 32
    assert hot_cache_fingerprint(entry, cached_at + timedelta(seconds=601), 600) is None
    # The period's hash and the one before hold every entry younger than the TTL.
    assert hot_cache_keys(cached_at + timedelta(seconds=599), 600) == (
        "payments:references:2026-12-02T10:00:00Z",
        "payments:references:2026-12-02T09:50:00Z",
    )
    assert hot_cache_keys(cached_at + timedelta(seconds=600), 600)[1] == (
        "payments:references:2026-12-02T10:00:00Z"
    )


async def test_an_announcement_wakes_the_views_waiting_for_its_ids_only() -> None:
    redis = FakeRedis()
    board = DecisionBoard(cast(RedisConnection, redis))
    waiting = board.expect("generic", "msg-1")
    other = board.expect("card", "msg-1")  # the same id through another endpoint
    await board.post([decision("R-1", "created", None, "msg-1")], {})
    (announcement,) = redis.announcements

    board._deliver(b"not json")  # a stray message on the channel is ignored
    assert not waiting.done()
    board._deliver(json.dumps(announcement).encode())

    assert waiting.result().status == 201
    assert not other.done()
    board.forget("card", "msg-1", other)
    board.forget("generic", "msg-1", waiting)
    assert board._waiting == {}
