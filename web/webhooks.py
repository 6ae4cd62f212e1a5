"""POST /api/v1/payments/webhook[/{channel}]: signed payment notices into ``payment.intake``.

The order: the cap on requests in flight in this process (503 with Retry-After),
channel (404), the guards of app/intake/guards.py (403 allowlist, 429 rate
limit), the body size (413, before it is read) and its read time (408 past
WEBHOOK_BODY_TIMEOUT_SECONDS: a sender trickling bytes holds nothing longer), the
signature (401, before the body is parsed), the body (400/422); then one Redis
round trip, shared by the requests of one event-loop tick, for the replay window
(the same webhook-id answers what it was answered; with another body, 409) and
the hot cache (a reference committed with the same fields is a duplicate at
once); then the record goes to the intake topic keyed by its reference. Then the
view waits for the record agent's decision
(app/recording/decisions.py) until WEBHOOK_TIMEOUT_MS: created 201, duplicate 200,
conflict 409, or 202 accepted when the decision is still pending (after one
look at the stored decision: its announcement may have been missed).

No 2xx before the broker has the record (503 with Retry-After otherwise). One
answer per webhook-id, whatever the timing: the claim on an id is never given
back, since a send Kafka did not acknowledge in time may still be written; a
retry with the same id and body is published again (the reference's dedup
absorbs a repeat) and gets the decision of its own record, never ``duplicate``
of itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, get_args

from aiohttp import web
from faust.web import Request, Response, View

from app.exceptions import PublishFailed
from app.instruments import CACHE_REQUESTS, DECISIONS, REFERENCE_ANSWERS, WEBHOOK_SECONDS
from app.intake.channels import CHANNELS, GENERIC, Channel
from app.intake.signatures import signature_headers
from app.intake.webhook_body import Rejected, parse_body, record_for
from app.kafka.codecs import encode_record
from app.kafka.topics import INTAKE
from app.models import DeadLetterReason, KnownReference, PaymentRecord
from app.recording import audit_trail, dedup
from app.recording.decisions import Answer, Claim
from web.binding import bound

if TYPE_CHECKING:
    from app.intake.guards import Guards
    from app.intake.signatures import Verifier
    from app.intake.webhook_counts import WebhookCounts
    from app.kafka.publisher import Publisher
    from app.models import DateWindow
    from app.recording.decisions import DecisionBoard
    from app.recording.reference_cache import MemoryCache
    from app.settings import Settings

log = logging.getLogger(__name__)

#: What a webhook answer can say (body "status", or "error" for refusals): the stats' outcomes.
KNOWN_OUTCOMES = frozenset(
    {
        "created",
        "duplicate",
        "conflict",
        "accepted",
        "unknown_channel",
        "forbidden",
        "rate_limited",
        "too_large",
        "request_timeout",
        "busy",
        "unauthorized",
        "invalid_json",
        "invalid_body",
        "invalid_payment",
        "webhook_id_reused",
        "unavailable",
        "disabled",
        # a record the agent dead-lettered is answered 422 with its reason
        *get_args(DeadLetterReason),
    }
)

#: Seconds a client should wait before retrying when Kafka is unavailable.
RETRY_AFTER_SECONDS = 5
#: Seconds a client should wait before retrying when the process has too many requests in flight.
BUSY_RETRY_AFTER_SECONDS = 1


class Ingress(Protocol):
    """What answering a webhook needs: the worker's app, or a front process (web/front.py)."""

    settings: Settings
    decisions: DecisionBoard
    guards: Guards
    verifier: Verifier
    publisher: Publisher
    date_window: DateWindow
    webhook_counts: WebhookCounts
    memory: MemoryCache | None


@dataclass
class WorkerIngress:
    """The worker's :class:`Ingress`, handed over by the composition root (app/service.py)."""

    settings: Settings
    decisions: DecisionBoard
    guards: Guards
    verifier: Verifier
    publisher: Publisher
    date_window: DateWindow
    webhook_counts: WebhookCounts
    memory: MemoryCache | None = None


@dataclass(frozen=True)
class Reply:
    """A webhook request's answer: status, JSON body and extra headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] | None = None


async def answer_webhook(ingress: Ingress, http: web.Request, channel_name: str | None) -> Reply:
    """The whole request, in the order of the module doc; never raises for client input."""
    started = time.perf_counter()
    try:
        with ingress.guards.admitted() as admitted:
            if not admitted:
                raise Rejected(
                    503,
                    "busy",
                    "too many requests in flight here; retry after the Retry-After seconds",
                    retry=BUSY_RETRY_AFTER_SECONDS,
                )
            reply = await _accept(ingress, http, channel_name)
    except Rejected as rejected:
        headers = {} if rejected.retry is None else {"Retry-After": str(rejected.retry)}
        if rejected.status == 408:
            headers["Connection"] = "close"  # the rest of the body is not wanted
        reply = Reply(rejected.status, rejected.body(), headers or None)
        if rejected.status < 500 and ingress.settings.audit_log:
            client = ingress.guards.client(http.remote, _forwarded_for(http))
            audit_trail.webhook_rejected(
                rejected.status,
                rejected.error,
                channel_name or GENERIC.name,
                signature_headers(http.headers)["webhook-id"] or None,
                None if client is None else str(client),
            )
    seconds = time.perf_counter() - started
    WEBHOOK_SECONDS.labels(str(reply.status)).observe(seconds)
    outcome = reply.body.get("status") or reply.body.get("error") or "unknown"
    # Labels from fixed sets only: a path or body must not choose what gets stored.
    channel = GENERIC.name if channel_name is None else channel_name
    ingress.webhook_counts.add(
        channel if channel in CHANNELS or channel == GENERIC.name else "unknown",
        reply.status,
        outcome if outcome in KNOWN_OUTCOMES else "other",
        seconds,
    )
    return reply


async def _accept(ingress: Ingress, http: web.Request, channel_name: str | None) -> Reply:
    if not ingress.settings.webhooks_enabled:
        raise Rejected(
            503,
            "disabled",
            "webhooks are switched off here (WEBHOOKS_ENABLED=false); retry later",
            retry=RETRY_AFTER_SECONDS,
        )
    board = ingress.decisions
    channel = _channel(channel_name)
    headers = http.headers
    client = ingress.guards.client(http.remote, _forwarded_for(http))
    if not ingress.guards.allowed(client):
        log.info("webhook from %s refused: not in WEBHOOK_IP_ALLOWLIST", client)
        raise Rejected(403, "forbidden", "this address may not send webhooks")
    wait = await ingress.guards.retry_after(client)
    if wait is not None:
        raise Rejected(429, "rate_limited", "too many requests from this address", retry=wait)
    settings = ingress.settings
    raw = await _read_body(
        http, settings.webhook_max_body_bytes, settings.webhook_body_timeout_seconds
    )
    signature = signature_headers(headers)  # webhook-* or, from Svix, svix-*
    if not ingress.verifier.verify(channel.name, raw, signature):
        raise Rejected(401, "unauthorized", "missing or invalid webhook signature")
    webhook_id = signature["webhook-id"]
    record = record_for(
        channel,
        parse_body(raw),
        webhook_id=webhook_id,
        received_at=datetime.now(UTC),
        window=ingress.date_window,
    )
    deadline = time.monotonic() + ingress.settings.webhook_timeout_ms / 1000
    body_hash = hashlib.sha256(raw).hexdigest()
    endpoint = channel.name
    claim = await board.claim(endpoint, webhook_id, body_hash, record.reference_number)
    if claim.state == "reused":
        raise Rejected(409, "webhook_id_reused", "this webhook-id came before with another body")
    replay = claim.state == "seen"
    if claim.answer is not None:
        return _reply(claim.answer, replay=True)
    layer = _cached_layer(ingress, claim, record)
    if layer is not None:
        # Committed with the same fields: a duplicate, decided here and counted once.
        REFERENCE_ANSWERS.labels(layer).inc()
        answer = Answer(200, {"status": "duplicate", "payment_id": str(record.payment_id)})
        await board.remember(endpoint, webhook_id, answer)
        if not replay:
            DECISIONS.labels(record.source, "duplicate").inc()
            if ingress.settings.audit_log:
                audit_trail.decisions([dedup.duplicate_of(record)], ())
        return _reply(answer, replay=replay)

    # A replay still undecided is published again: its first delivery may have
    # died before Kafka had it, and the reference's dedup absorbs a repeat.
    decided = board.expect(endpoint, webhook_id)
    try:
        message = (record.reference_number.encode(), encode_record(record))
        try:
            await asyncio.wait_for(ingress.publisher.publish(INTAKE, [message]), _left(deadline))
        except (PublishFailed, TimeoutError) as exc:
            # Not a 2xx: nothing says Kafka has it. But it may yet (a late ack, a
            # buffered send), so the claim stays: the sender's retry is published
            # again and hears its own record's decision, never "duplicate" of itself.
            log.warning(
                "webhook %s: Kafka did not acknowledge the intake record (%r); answered 503, "
                "the sender retries with the same webhook-id",
                webhook_id,
                exc,
            )
            raise Rejected(
                503,
                "unavailable",
                "the payment could not be stored; retry later with the same webhook-id and body",
                retry=RETRY_AFTER_SECONDS,
            ) from None
        if claim.state == "unchecked":
            return _reply(_accepted(record))  # Redis away: no decision will come
        try:
            answer = await asyncio.wait_for(asyncio.shield(decided), _left(deadline))
        except TimeoutError:
            # The announcement may have come while the listener was away: the stored
            # decision says what it said.
            answer = await board.stored(endpoint, webhook_id) or _accepted(record)
        if answer.body.get("status") == "created" and ingress.memory is not None:
            # This record created it: its fingerprint is the recorded one. (A duplicate's
            # may not be: a payment recorded before currency was a field matches without it.)
            ingress.memory.put(
                record.reference_number, KnownReference(record.fingerprint, record.payment_id)
            )
        return _reply(answer, replay=replay)
    finally:
        board.forget(endpoint, webhook_id, decided)


def _cached_layer(ingress: Ingress, claim: Claim, record: PaymentRecord) -> str | None:
    """The cache layer that knows ``record`` as recorded with its fields, if one does.

    Memory first, only for a request that took its webhook-id just now: in the
    worker the record agent caches a reference before it stores the decision, and
    a retry of the delivery that created it must hear ``created``, not
    ``duplicate`` of itself. Then the Redis hot cache (its entries are written
    after the decisions), as :meth:`DecisionBoard.claim` read it.
    """
    memory = ingress.memory
    if memory is not None and claim.state == "new":
        known = memory.get(record.reference_number)
        CACHE_REQUESTS.labels("memory", "miss" if known is None else "hit").inc()
        if known is not None and dedup.is_duplicate(record, known.fingerprint):
            return "memory"
    if claim.state == "unchecked" or ingress.decisions.cache_seconds is None:
        return None  # Redis away, or its hot cache off: not asked
    if claim.fingerprint is None:
        CACHE_REQUESTS.labels("redis", "miss").inc()
        return None
    CACHE_REQUESTS.labels("redis", "hit").inc()
    if not dedup.is_duplicate(record, claim.fingerprint):
        return None  # another payment under this reference: the agent says conflict
    if memory is not None:
        memory.put(record.reference_number, KnownReference(claim.fingerprint, record.payment_id))
    return "redis"


def _forwarded_for(http: web.Request) -> list[str]:
    """Every X-Forwarded-For line: a proxy may append its own after the client's."""
    return http.headers.getall("X-Forwarded-For", [])


def _reply(answer: Answer, *, replay: bool = False) -> Reply:
    return Reply(answer.status, answer.body, {"Idempotent-Replay": "true"} if replay else None)


class WebhookView(View):
    """One view for the generic body (no channel in the path) and each channel's own."""

    ingress: Ingress

    async def post(self, request: Request, channel: str | None = None) -> Response:
        # Faust's aiohttp driver hands over aiohttp's request.
        reply = await answer_webhook(self.ingress, cast(web.Request, request), channel)
        return self.json(reply.body, status=reply.status, headers=reply.headers)


async def _read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The body: 413 past ``limit`` bytes (never buffering more), 408 if not all in ``seconds``."""
    too_large = Rejected(413, "too_large", f"the body must be at most {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while chunk := await request.content.read(limit + 1 - size):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise too_large
    except TimeoutError:
        message = f"the body did not arrive within {seconds:g} s; send it whole, then retry"
        raise Rejected(408, "request_timeout", message) from None
    return b"".join(chunks)


def _accepted(record: PaymentRecord) -> Answer:
    """Durable in Kafka, decision still pending."""
    return Answer(202, {"status": "accepted", "payment_id": str(record.payment_id)})


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _channel(name: str | None) -> Channel:
    if name is None:
        return GENERIC
    channel = CHANNELS.get(name)
    if channel is None:
        known = ", ".join(sorted(CHANNELS))
        raise Rejected(404, "unknown_channel", f"no channel {name!r}; channels: {known}")
    return channel


#: The OpenAPI document of these endpoints, kept in the repository and served as it is.
OPENAPI = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"


class OpenApiView(View):
    """GET /api/v1/openapi.yaml."""

    async def get(self, request: Request) -> Response:
        return self.bytes(OPENAPI.read_bytes(), content_type="application/yaml")


class ChannelWebhookView(WebhookView):
    """The same view under the channel path (Faust keeps one path per view class)."""


def register(app: Any, *, ingress: Ingress) -> None:
    """Route both webhook paths."""
    app.page("/api/v1/payments/webhook")(bound(WebhookView, ingress=ingress))
    app.page("/api/v1/payments/webhook/{channel}")(bound(ChannelWebhookView, ingress=ingress))
    app.page("/api/v1/openapi.yaml")(OpenApiView)
