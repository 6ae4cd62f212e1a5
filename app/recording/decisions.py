"""Webhook answers through Redis: decisions, the replay window and the hot reference cache.

The record agent decides a webhook's record after its Postgres commit, in
another process than the web view that holds the request (any worker of the
group may own the reference's partition). After the commit it writes each
webhook decision under the webhook id and announces it to the boards waiting for
it, in one script call (POST_SCRIPT, with the hot cache's writes): each board (a
worker's, a front's) has its own pub/sub channel, which its views' claims add to
the id's waiters, so an announcement wakes only the processes holding its requests
(one channel for all cost every front and the worker ~0.2 ms of CPU per batch each
to read what was not theirs; bench/README.md). A decision nobody registered for
(a view of the previous release, during a rolling upgrade) goes to the shared
DECISIONS_CHANNEL, which every board also listens on. A view registers its wait before it
publishes, so the announcement cannot come first; a replay reads the stored
decision instead, and so does a view whose wait ran out (the listener may have
been reconnecting). A decision that never comes in time (Redis away, a
rebalance) leaves the view to answer 202: the record is durable.

Redis is a cache and a guard here, never the authority: when it is away,
nothing is lost, answers are 202 instead of synchronous, and a warning says so.

Webhook ids are the sender's: each endpoint (a channel, or ``generic``) verifies
with its own secrets and has its own ids, so they are kept per endpoint, and one
channel's id never answers for another's. Keys (all expire after ANSWER_TTL_SECONDS):
- ``payments:{endpoint}:webhook:{id}`` — the replay window: the SHA-256 of the
  body first sent under the id;
- ``payments:{endpoint}:decision:{id}`` — the answer for that id: what the agent
  decided for its record (or the hot cache's duplicate); the first one stands;
- ``payments:{endpoint}:waiters:{id}`` — the channels of the boards whose views wait
  for that id's decision (expires WAIT_MARGIN_SECONDS after the views' wait ends);
- ``payments:references:{start}`` — the **hot cache** (ENABLE_REDIS_CACHE): a hash
  of the references webhooks carried that were committed in one period of
  REDIS_TTL_SECONDS starting at ``start`` (UTC, ``2026-12-02T00:00:00Z``) → their
  fingerprint and the second they were cached; a hit older than REDIS_TTL_SECONDS
  is a miss, and each hash expires two periods after its last write, so the
  current and the previous period hold every live entry. One HSET per batch: a SET
  with a TTL per reference costs ~40 µs through redis-py.

Only the hot cache is a cache. The replay window, the stored answers and the
announcements coordinate the processes (one answer per webhook-id, whoever holds
the request): ENABLE_REDIS_CACHE=false leaves them on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mode import Service
from redis.exceptions import RedisError

from app.instruments import REDIS_UNAVAILABLE
from app.models import DeadLetter, Decision, KnownReference, endpoint_of
from app.settings import Settings
from app.storage.redis_connection import RedisConnection, TickBatch

log = logging.getLogger(__name__)

#: How long an answer, a decision and a cached reference are kept (the replay window).
ANSWER_TTL_SECONDS = 24 * 3600

DECISIONS_CHANNEL = "payments:decisions"

#: The web views' claims, in one round trip for all the requests that reached their
#: claim in one event-loop tick (:meth:`DecisionBoard.claim`). Per claim: take the id
#: for this body (SET NX), else read what an earlier request stored under it and the
#: decision; add this board's channel to the id's waiters unless a decision is stored
#: already (the view answers from it); and read the hot cache when it is on (the current
#: period's hash, else the previous one's). KEYS: (webhook key, decision key, waiters
#: key) per claim, then the two hashes when the cache is on. ARGV: n, the TTL, the
#: board's channel, the waiters' TTL, then (body hash, reference) per claim.
#: Returns 4 values per claim: taken (1/0), stored body hash, decision, cached entry;
#: missing values are "". One script call per request cost redis-py ~100 us of CPU;
#: one per tick costs ~30 us a claim at 10 claims (bench/README.md, "Claims per tick").
CLAIMS_SCRIPT = """
local n = tonumber(ARGV[1])
local cache = #KEYS > 3 * n
local out = {}
for i = 1, n do
  local webhook, body = KEYS[3 * i - 2], ARGV[3 + 2 * i]
  local stored, decided, cached = '', '', false
  local taken = redis.call('SET', webhook, body, 'NX', 'EX', ARGV[2])
  if not taken then
    stored = redis.call('GET', webhook) or ''
    decided = redis.call('GET', KEYS[3 * i - 1]) or ''
  end
  if decided == '' then
    redis.call('SADD', KEYS[3 * i], ARGV[3])
    redis.call('EXPIRE', KEYS[3 * i], ARGV[4])
  end
  if cache then
    local reference = ARGV[4 + 2 * i]
    cached = redis.call('HGET', KEYS[3 * n + 1], reference)
    if not cached then cached = redis.call('HGET', KEYS[3 * n + 2], reference) end
  end
  out[#out + 1] = taken and 1 or 0
  out[#out + 1] = stored
  out[#out + 1] = decided
  out[#out + 1] = cached or ''
end
return out
"""

#: The answers the views gave without the agent (the hot cache's duplicates), kept for
#: replays: one script call for a tick's. KEYS: the decision keys. ARGV: the TTL, then an
#: answer per key. The first answer for an id stands (SET NX).
REMEMBER_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'NX', 'EX', ARGV[1])
end
return #KEYS
"""

#: At most this many claims (or kept answers) go in one script call (Redis runs a script
#: alone: ~5 us a claim).
CLAIMS_PER_CALL = 100

#: The record agent's one round trip per batch: store each webhook decision under its id
#: (SET NX; the first one stands and is what is announced), write the hot cache when it
#: is on, and announce each decision on the channels of the boards waiting for its id
#: (one message per channel), or on the shared channel when none registered. KEYS: the
#: n decision keys, the n waiters keys, then the current hot-cache hash if any. ARGV: n,
#: the decisions' TTL, the shared channel, the hash's TTL, then (answer, waiting key) n
#: times, then (reference, entry) pairs. A pipeline and a PUBLISH cost redis-py about as
#: much CPU per command as the round trips.
POST_SCRIPT = """
local n = tonumber(ARGV[1])
local by_channel, channels = {}, {}
for i = 1, n do
  local answer = ARGV[3 + 2 * i]
  local first = redis.call('SET', KEYS[i], answer, 'NX', 'EX', ARGV[2], 'GET')
  if first then answer = first end
  local waiting = redis.call('SMEMBERS', KEYS[n + i])
  if #waiting == 0 then waiting = {ARGV[3]} end
  for _, channel in ipairs(waiting) do
    if not by_channel[channel] then
      by_channel[channel] = {}
      channels[#channels + 1] = channel
    end
    local announced = by_channel[channel]
    announced[#announced + 1] = {ARGV[4 + 2 * i], answer}
  end
end
if #KEYS > 2 * n then
  for j = 5 + 2 * n, #ARGV, 2 do
    redis.call('HSET', KEYS[2 * n + 1], ARGV[j], ARGV[j + 1])
  end
  redis.call('EXPIRE', KEYS[2 * n + 1], ARGV[4])
end
for _, channel in ipairs(channels) do
  redis.call('PUBLISH', channel, cjson.encode(by_channel[channel]))
end
return n
"""

#: How long after a view's wait (WEBHOOK_TIMEOUT_MS) its board stays among an id's waiters.
WAIT_MARGIN_SECONDS = 30

#: HTTP status of each outcome.
STATUS_OF = {"created": 201, "duplicate": 200, "conflict": 409}

#: What a sender is told when the record agent dead-lettered its record (422), by reason.
REFUSED_MESSAGES = {
    "rejected": "the database refused this payment; it is not recorded",
    "unprocessable": "this payment could not be processed; it is not recorded, and kept for review",
}


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode()


def webhook_key(endpoint: str, webhook_id: str) -> str:
    return f"payments:{endpoint}:webhook:{webhook_id}"


def decision_key(endpoint: str, webhook_id: str) -> str:
    return f"payments:{endpoint}:decision:{webhook_id}"


def waiters_key(endpoint: str, webhook_id: str) -> str:
    """The channels of the boards whose views wait for this id's decision (a Redis set)."""
    return f"payments:{endpoint}:waiters:{webhook_id}"


def waiting_key(endpoint: str, webhook_id: str) -> str:
    """How views wait for, and announcements name, one endpoint's webhook id."""
    return f"{endpoint}:{webhook_id}"


def redis_cache_seconds(settings: Settings) -> int | None:
    """The hot cache's lifetime (REDIS_TTL_SECONDS), or None when ENABLE_REDIS_CACHE is off."""
    return settings.redis_ttl_seconds if settings.enable_redis_cache else None


def hot_cache_keys(now: datetime, ttl_seconds: int) -> tuple[str, str]:
    """The hot cache's hashes for the period of ``now`` and the one before (module doc)."""
    period = int(now.timestamp()) // ttl_seconds
    return _hot_cache_key(period * ttl_seconds), _hot_cache_key((period - 1) * ttl_seconds)


@functools.lru_cache(maxsize=8)
def _hot_cache_key(start: int) -> str:
    # Remembered: the period changes once per REDIS_TTL_SECONDS, and formatting its start
    # cost ~0.5% of a worker's and ~0.8% of a front's samples at 200 req/s (py-spy).
    return f"payments:references:{datetime.fromtimestamp(start, UTC):%Y-%m-%dT%H:%M:%SZ}"


def hot_cache_entry(fingerprint: str, now: datetime) -> str:
    """A hot-cache value: the recorded fingerprint and the second it was cached."""
    return f"{fingerprint} {int(now.timestamp())}"


def hot_cache_fingerprint(entry: str, now: datetime, ttl_seconds: int) -> str | None:
    """The fingerprint of a hot-cache value, unless older than ``ttl_seconds``."""
    fingerprint, _, cached_at = entry.partition(" ")
    if not cached_at.isdigit() or now.timestamp() - int(cached_at) > ttl_seconds:
        return None
    return fingerprint


@dataclass(frozen=True)
class Answer:
    """What a webhook request is told: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]

    def encode(self) -> str:
        return json.dumps({"status": self.status, "body": self.body})

    @classmethod
    def decode(cls, raw: bytes | str) -> Answer:
        value = json.loads(raw)
        return cls(int(value["status"]), dict(value["body"]))

    @classmethod
    def of(cls, decision: Decision) -> Answer:
        body: dict[str, Any] = {"status": decision.outcome, "payment_id": str(decision.payment_id)}
        if decision.outcome == "conflict":
            body["differing_fields"] = list(decision.differing_fields)
        return cls(STATUS_OF[decision.outcome], body)

    @classmethod
    def refused(cls, letter: DeadLetter) -> Answer:
        """422 for a record the agent dead-lettered (a conflict has its own decision)."""
        message = REFUSED_MESSAGES.get(letter.reason, "this payment is not recorded")
        errors = [detail.model_dump() for detail in letter.details]
        return cls(422, {"error": letter.reason, "message": message, "errors": errors})


@dataclass(frozen=True)
class Claim:
    """What Redis says of a webhook id and its reference, in one round trip.

    ``state``: ``new`` (this request has the id), ``seen`` (an earlier request
    with the same body had it: ``answer`` is its decision if one was made),
    ``reused`` (the id came with another body) or ``unchecked`` (Redis away).
    ``fingerprint`` is what the hot cache holds for the reference, if anything
    (always None when the hot cache is off or Redis away).
    """

    state: str
    answer: Answer | None = None
    fingerprint: str | None = None


def _letter_endpoint(letter: DeadLetter) -> str:
    """The endpoint a dead-lettered webhook record came through (its record's channel)."""
    original = letter.original if isinstance(letter.original, dict) else {}
    channel = original.get("payment_channel")
    return endpoint_of(channel if isinstance(channel, str) else None)


class DecisionBoard(Service):
    """One per web process: the agent posts decisions here; web views wait for them.

    ``cache_seconds``: REDIS_TTL_SECONDS for the hot cache, or None when
    ENABLE_REDIS_CACHE is off (then nothing reads or writes it). ``wait_seconds``:
    how long its views wait for a decision (WEBHOOK_TIMEOUT_MS).
    """

    def __init__(
        self,
        redis: RedisConnection,
        *,
        cache_seconds: int | None = ANSWER_TTL_SECONDS,
        wait_seconds: float = 5.0,
        **kwargs: Any,
    ) -> None:
        self.redis = redis
        self.cache_seconds = cache_seconds
        #: This board's own channel: announcements of the ids its views claimed.
        self.channel = f"{DECISIONS_CHANNEL}:{uuid.uuid4().hex}"
        self._waiters_ttl = math.ceil(wait_seconds) + WAIT_MARGIN_SECONDS
        self._waiting: dict[str, list[asyncio.Future[Answer]]] = {}
        self._claims = TickBatch(self._claim_together, CLAIMS_PER_CALL)
        self._claims_script: Any = None
        self._remembered = TickBatch(self._remember_together, CLAIMS_PER_CALL)
        self._remember_script: Any = None
        self._post_script: Any = None
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        if self.cache_seconds is None:
            log.info(
                "ENABLE_REDIS_CACHE=false: no hot reference cache in Redis (duplicates go to "
                "the record agent); Redis still keeps the webhook-id replay window, the stored "
                "answers, the decision announcements and the rate limits: they coordinate the "
                "processes, they are not a cache"
            )
        else:
            log.info(
                "Redis hot reference cache on: entries answer for REDIS_TTL_SECONDS=%d",
                self.cache_seconds,
            )

    # --- the record agent's side ---------------------------------------------------

    async def post(
        self,
        decisions: Iterable[Decision],
        committed: Mapping[str, KnownReference],
        dead_letters: Iterable[DeadLetter] = (),
    ) -> None:
        """Store and announce webhook decisions; cache their references. Never raises.

        Webhook records dead-lettered for anything but a conflict are answered 422
        (:meth:`Answer.refused`) the same way. Only references that webhooks carried
        are cached: a staging load would pay for a cache entry per row
        (bench/staging: ~10% more agent CPU), and a webhook repeating a staged
        payment is still answered, through the agent.
        """
        webhook = [decision for decision in decisions if decision.source == "webhook"]
        refused = [
            letter
            for letter in dead_letters
            if letter.source == "webhook" and letter.source_id and letter.reason != "conflict"
        ]
        if not webhook and not refused:
            return
        answers = [
            (endpoint_of(decision.channel), decision.source_id, Answer.of(decision))
            for decision in webhook
        ]
        answers += [
            (_letter_endpoint(letter), str(letter.source_id), Answer.refused(letter))
            for letter in refused
        ]
        keys = [decision_key(endpoint, webhook_id) for endpoint, webhook_id, _ in answers]
        keys += [waiters_key(endpoint, webhook_id) for endpoint, webhook_id, _ in answers]
        args: list[str | int] = [len(answers), ANSWER_TTL_SECONDS, DECISIONS_CHANNEL, 0]
        for endpoint, webhook_id, answer in answers:
            args += [answer.encode(), waiting_key(endpoint, webhook_id)]
        # The cache after the decisions (the script's order): a request that finds the
        # reference cached finds its own id's decision too, and is not told "duplicate"
        # of the payment its first delivery created.
        cached = [d.reference_number for d in webhook if d.reference_number in committed]
        if cached and self.cache_seconds is not None:
            now = datetime.now(UTC)
            keys.append(hot_cache_keys(now, self.cache_seconds)[0])
            args[3] = 2 * self.cache_seconds
            for reference in cached:
                args += [reference, hot_cache_entry(committed[reference].fingerprint, now)]
        try:
            if self._post_script is None:
                self._post_script = self.redis.client.register_script(POST_SCRIPT)
            await self._post_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            REDIS_UNAVAILABLE.labels("post_decisions").inc()
            log.warning(
                "could not post %d webhook decisions to Redis (%r): their senders get 202",
                len(answers),
                exc,
            )

    # --- the web view's side -------------------------------------------------------

    def expect(self, endpoint: str, webhook_id: str) -> asyncio.Future[Answer]:
        """A future the decision for ``webhook_id`` will resolve; call before publishing.

        Registered before the record can reach the agent, so the announcement
        cannot come first. Call :meth:`forget` when done with it.
        """
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(waiting_key(endpoint, webhook_id), []).append(future)
        return future

    def forget(self, endpoint: str, webhook_id: str, future: asyncio.Future[Answer]) -> None:
        key = waiting_key(endpoint, webhook_id)
        waiters = self._waiting.get(key, [])
        if future in waiters:
            waiters.remove(future)
        if not waiters:
            self._waiting.pop(key, None)

    async def claim(self, endpoint: str, webhook_id: str, body_hash: str, reference: str) -> Claim:
        """Take ``webhook_id`` for this body, or say what came before; read the hot cache too.

        The claims of every request that gets here within one event-loop tick go to
        Redis together, in one script call (CLAIMS_SCRIPT).
        """
        keys = (
            webhook_key(endpoint, webhook_id),
            decision_key(endpoint, webhook_id),
            waiters_key(endpoint, webhook_id),
        )
        try:
            taken, stored, decided, cached = await self._claims((*keys, body_hash, reference))
        except (RedisError, OSError) as exc:
            REDIS_UNAVAILABLE.labels("claim").inc()
            log.warning("webhook %s: Redis unavailable (%r); no replay check", webhook_id, exc)
            return Claim("unchecked")
        fingerprint = None
        if self.cache_seconds is not None and _text(cached):
            now = datetime.now(UTC)
            fingerprint = hot_cache_fingerprint(_text(cached), now, self.cache_seconds)
        if taken:
            return Claim("new", fingerprint=fingerprint)
        if _text(stored) not in ("", body_hash):
            return Claim("reused")
        answer = Answer.decode(decided) if _text(decided) else None
        return Claim("seen", answer, fingerprint)

    async def _claim_together(
        self, claims: list[tuple[str, str, str, str, str]]
    ) -> list[list[Any]]:
        """One CLAIMS_SCRIPT call for a tick's claims; (taken, stored, decided, cached) each.

        A claim: (webhook key, decision key, waiters key, body hash, reference).
        """
        keys: list[str] = []
        args: list[str | int] = [len(claims), ANSWER_TTL_SECONDS, self.channel, self._waiters_ttl]
        for webhook, decision, waiters, body_hash, reference in claims:
            keys += [webhook, decision, waiters]
            args += [body_hash, reference]
        if self.cache_seconds is not None:
            keys += hot_cache_keys(datetime.now(UTC), self.cache_seconds)
        if self._claims_script is None:
            self._claims_script = self.redis.client.register_script(CLAIMS_SCRIPT)
        found = await self._claims_script(keys=keys, args=args)
        return [found[i : i + 4] for i in range(0, len(found), 4)]

    async def remember(self, endpoint: str, webhook_id: str, answer: Answer) -> None:
        """Keep an answer given without the agent (the hot cache's), for replays.

        The answers of one event-loop tick go in one script call (REMEMBER_SCRIPT).
        """
        try:
            await self._remembered((decision_key(endpoint, webhook_id), answer.encode()))
        except (RedisError, OSError) as exc:
            REDIS_UNAVAILABLE.labels("remember").inc()
            log.warning("webhook %s: could not keep its answer (%r)", webhook_id, exc)

    async def _remember_together(self, answers: list[tuple[str, str]]) -> list[None]:
        """One REMEMBER_SCRIPT call for a tick's (decision key, answer) pairs."""
        if self._remember_script is None:
            self._remember_script = self.redis.client.register_script(REMEMBER_SCRIPT)
        await self._remember_script(
            keys=[key for key, _ in answers],
            args=[ANSWER_TTL_SECONDS, *(encoded for _, encoded in answers)],
        )
        return [None] * len(answers)

    async def stored(self, endpoint: str, webhook_id: str) -> Answer | None:
        """The decision stored for ``webhook_id``, if one was (an announcement can be missed)."""
        try:
            decided = await self.redis.client.get(decision_key(endpoint, webhook_id))
        except (RedisError, OSError) as exc:
            REDIS_UNAVAILABLE.labels("stored").inc()
            log.warning("webhook %s: could not read its decision (%r)", webhook_id, exc)
            return None
        return None if decided is None else Answer.decode(decided)

    @Service.task
    async def _listen(self) -> None:
        """Wake the views waiting for decisions announced to this board (reconnects).

        Its own channel, and the shared one (decisions nobody registered for).
        """
        pause = 0.5
        while not self.should_stop:
            try:
                async with self.redis.client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel, DECISIONS_CHANNEL)
                    pause = 0.5
                    while not self.should_stop:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            self._deliver(message["data"])
            except (RedisError, OSError) as exc:
                REDIS_UNAVAILABLE.labels("listen").inc()
                log.warning("decision listener: Redis unavailable (%r); retrying", exc)
                await self.sleep(pause)
                pause = min(pause * 2, 10.0)

    def _deliver(self, data: bytes) -> None:
        """Resolve the waits for a batch's announcement: a list of [waiting key, answer]."""
        try:
            announced = [(str(key), encoded) for key, encoded in json.loads(data)]
        except (ValueError, TypeError):
            log.warning("decision listener: ignoring a malformed message %r", data[:200])
            return
        waiting = self._waiting
        for key, encoded in announced:
            futures = waiting.get(key)
            if not futures:
                continue
            answer = Answer.decode(encoded)
            for future in futures:
                if not future.done():
                    future.set_result(answer)


# --- what operators read (app/ops/lookup.py) ---------------------------------------


async def hot_cache_entries(
    redis: RedisConnection, reference: str, now: datetime, cache_seconds: int
) -> list[tuple[str, str, str]]:
    """Each hot-cache hash holding ``reference``: (key, fingerprint, cached at)."""
    found = []
    for key in hot_cache_keys(now, cache_seconds):
        entry = await redis.client.hget(key, reference)
        if entry is not None:
            fingerprint, _, cached_at = _text(entry).partition(" ")
            found.append((key, fingerprint, cached_at))
    return found


@dataclass
class DecisionScan:
    """A bounded scan of the stored decisions; ``scanned`` counts the keys looked at."""

    limit: int
    scanned: int = 0

    async def naming(
        self, redis: RedisConnection, payment_id: str, progress: Callable[[str], None]
    ) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """(endpoint, webhook-id, answer) of each stored decision naming ``payment_id``."""
        client = redis.client
        cursor = 0
        while self.scanned < self.limit:
            cursor, keys = await client.scan(cursor, match=decision_key("*", "*"), count=1000)
            if keys:
                values = await client.mget(keys)
                for key, value in zip(keys, values, strict=True):
                    if value is not None and payment_id in _text(value):
                        # payments:{endpoint}:decision:{id}; an endpoint name holds no colon.
                        endpoint, _, webhook_id = (
                            _text(key).removeprefix("payments:").partition(":decision:")
                        )
                        yield endpoint, webhook_id, json.loads(value)
                before, self.scanned = self.scanned, self.scanned + len(keys)
                if self.scanned // 50_000 > before // 50_000:
                    progress(f"... scanned {self.scanned} decision keys in Redis")
            if not cursor:
                return
