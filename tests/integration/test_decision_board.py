"""The decision board's Lua scripts on a real Redis: the agent's post, the views' claims.

What a batch's post must leave behind: each webhook id's answer stored (the first
one stands), one announcement naming every waiting id with the answer that stands,
the hot cache written with its expiry when it is on, and 422 answers for webhook
records dead-lettered for anything but a conflict. What the claims made in one tick
must hear, from one script call: new, seen (with the decision and the cached
fingerprint), reused. The answers the views keep together: stored, the first standing.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app.models import DeadLetter, FieldError, KnownReference, endpoint_of
from app.recording import dedup
from app.recording.decisions import (
    ANSWER_TTL_SECONDS,
    CLAIMS_SCRIPT,
    DECISIONS_CHANNEL,
    REFUSED_MESSAGES,
    WAIT_MARGIN_SECONDS,
    Answer,
    Claim,
    DecisionBoard,
    decision_key,
    hot_cache_keys,
    waiters_key,
    waiting_key,
    webhook_key,
)
from app.storage.redis_connection import RedisConnection
from tests.stack import Stack

CACHE_SECONDS = 600


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[RedisConnection]:
    connection = RedisConnection(stack.settings())
    await connection.start()
    try:
        yield connection
    finally:
        await connection.stop()


def webhook_decision(reference: str, webhook_id: str, outcome: str = "created") -> Any:
    return dedup.decision(
        reference,
        outcome,
        source="webhook",
        source_id=webhook_id,
        channel=None,  # type: ignore[arg-type]
    )


async def post_and_hear(
    board: DecisionBoard, redis: RedisConnection, *post: Any
) -> list[list[str]]:
    """Post one batch while subscribed to the board's and the shared channel; what it announced."""
    heard = await post_and_hear_on(board, redis, [board.channel, DECISIONS_CHANNEL], *post)
    assert len(heard) == 1, heard
    [announced] = heard.values()
    return announced


async def post_and_hear_on(
    board: DecisionBoard, redis: RedisConnection, channels: list[str], *post: Any
) -> dict[str, list[list[str]]]:
    """Post one batch while subscribed to ``channels``; each one's announcements, joined."""
    heard: dict[str, list[list[str]]] = {}
    async with redis.client.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(*channels)
        await board.post(*post)
        quiet = 0
        for _ in range(50):
            message = await pubsub.get_message(timeout=0.1)
            if message is None:
                quiet += 1
                if heard and quiet >= 3:
                    return heard
                continue
            quiet = 0
            heard.setdefault(message["channel"].decode(), []).extend(json.loads(message["data"]))
    if not heard:
        raise AssertionError("no announcement within 5 s")
    return heard


async def test_a_post_stores_announces_and_caches_in_one_call(redis: RedisConnection) -> None:
    board = DecisionBoard(redis, cache_seconds=CACHE_SECONDS)
    run = uuid.uuid4().hex[:8]
    first, second = f"REF-A-{run}", f"REF-B-{run}"
    decisions = [webhook_decision(first, f"w1-{run}"), webhook_decision(second, f"w2-{run}")]
    committed = {first: KnownReference("fp-a", decisions[0].payment_id)}  # second: not cached
    now = datetime.now(UTC)

    announced = await post_and_hear(board, redis, decisions, committed)

    expected = [Answer.of(decision) for decision in decisions]
    assert announced == [
        [waiting_key("generic", f"w1-{run}"), expected[0].encode()],
        [waiting_key("generic", f"w2-{run}"), expected[1].encode()],
    ]
    client = redis.client
    for webhook_id, answer in zip((f"w1-{run}", f"w2-{run}"), expected, strict=True):
        key = decision_key("generic", webhook_id)
        assert Answer.decode(await client.get(key)) == answer
        assert ANSWER_TTL_SECONDS - 60 < await client.ttl(key) <= ANSWER_TTL_SECONDS
    current, _ = hot_cache_keys(now, CACHE_SECONDS)
    entry = (await client.hget(current, first)).decode()
    assert entry.startswith("fp-a ")
    assert await client.hget(current, second) is None
    assert CACHE_SECONDS < await client.ttl(current) <= 2 * CACHE_SECONDS


async def test_the_first_answer_for_an_id_stands_and_is_announced(redis: RedisConnection) -> None:
    board = DecisionBoard(redis, cache_seconds=None)  # the hot cache off: nothing cached
    run = uuid.uuid4().hex[:8]
    reference, webhook_id = f"REF-{run}", f"w-{run}"
    created = webhook_decision(reference, webhook_id)
    await post_and_hear(board, redis, [created], {})
    # A redelivered record is decided again, as a duplicate of itself: the id keeps
    # its first answer, and the announcement says that one.
    again = webhook_decision(reference, webhook_id, outcome="duplicate")
    announced = await post_and_hear(board, redis, [again], {})

    assert announced == [[waiting_key("generic", webhook_id), Answer.of(created).encode()]]
    stored = await redis.client.get(decision_key("generic", webhook_id))
    assert Answer.decode(stored) == Answer.of(created)
    current, _ = hot_cache_keys(datetime.now(UTC), CACHE_SECONDS)
    assert await redis.client.hget(current, reference) is None


async def test_a_refused_webhook_record_is_answered_422(redis: RedisConnection) -> None:
    board = DecisionBoard(redis, cache_seconds=CACHE_SECONDS)
    run = uuid.uuid4().hex[:8]
    letter = DeadLetter(
        reason="rejected",
        details=[FieldError(field="record", message='value refused: ünïcode "quoted" / é')],
        reference_number=f"REF-{run}",
        source="webhook",
        source_id=f"w-{run}",
        original={"payment_channel": "card"},
        failed_at=datetime.now(UTC),
    )

    announced = await post_and_hear(board, redis, [], {}, [letter])

    refused = Answer.refused(letter)
    assert refused.status == 422
    assert refused.body["message"] == REFUSED_MESSAGES["rejected"]
    endpoint = endpoint_of("card")  # the channel the record came through
    assert announced == [[waiting_key(endpoint, f"w-{run}"), refused.encode()]]
    stored = await redis.client.get(decision_key(endpoint, f"w-{run}"))
    assert stored is not None
    assert Answer.decode(stored) == refused


async def test_a_decision_is_announced_only_to_the_boards_waiting_for_it(
    redis: RedisConnection,
) -> None:
    worker = DecisionBoard(redis, cache_seconds=None)
    front_a = DecisionBoard(redis, cache_seconds=None, wait_seconds=5)
    front_b = DecisionBoard(redis, cache_seconds=None, wait_seconds=5)
    run = uuid.uuid4().hex[:8]
    ids = {name: f"w-{name}-{run}" for name in ("a", "b", "both", "nobody")}
    await front_a.claim("generic", ids["a"], "hash-a", f"REF-A-{run}")
    await front_b.claim("generic", ids["b"], "hash-b", f"REF-B-{run}")
    await front_a.claim("generic", ids["both"], "hash-2", f"REF-2-{run}")
    await front_b.claim("generic", ids["both"], "hash-2", f"REF-2-{run}")  # a replay, waiting too
    decisions = {
        name: webhook_decision(f"REF-{name}-{run}", webhook_id) for name, webhook_id in ids.items()
    }

    channels = [worker.channel, front_a.channel, front_b.channel, DECISIONS_CHANNEL]
    heard = await post_and_hear_on(worker, redis, channels, list(decisions.values()), {})

    def announced(*names: str) -> list[list[str]]:
        return [
            [waiting_key("generic", ids[name]), Answer.of(decisions[name]).encode()]
            for name in names
        ]

    assert heard == {
        front_a.channel: announced("a", "both"),
        front_b.channel: announced("b", "both"),
        # Nobody registered (a view of the previous release): the shared channel.
        DECISIONS_CHANNEL: announced("nobody"),
    }
    waiters = waiters_key("generic", ids["both"])
    assert await redis.client.smembers(waiters) == {
        front_a.channel.encode(),
        front_b.channel.encode(),
    }
    assert 5 < await redis.client.ttl(waiters) <= 5 + WAIT_MARGIN_SECONDS
    # A claim that finds the decision stored answers from it: it waits for nothing.
    late = DecisionBoard(redis, cache_seconds=None)
    assert await late.claim("generic", ids["a"], "hash-a", f"REF-A-{run}") == Claim(
        "seen", Answer.of(decisions["a"])
    )
    assert await redis.client.smembers(waiters_key("generic", ids["a"])) == {
        front_a.channel.encode()
    }


async def test_a_started_board_wakes_its_view_with_the_decision(redis: RedisConnection) -> None:
    worker = DecisionBoard(redis, cache_seconds=None)
    front = DecisionBoard(redis, cache_seconds=None)
    await front.start()
    try:
        run = uuid.uuid4().hex[:8]
        webhook_id = f"w-{run}"
        for _ in range(50):  # the listener subscribes in the background
            if await redis.client.pubsub_numsub(front.channel) == [(front.channel.encode(), 1)]:
                break
            await asyncio.sleep(0.1)
        assert await front.claim("generic", webhook_id, "hash", f"REF-{run}") == Claim("new")
        waiting = front.expect("generic", webhook_id)
        decision = webhook_decision(f"REF-{run}", webhook_id)

        await worker.post([decision], {})

        assert await asyncio.wait_for(waiting, 5) == Answer.of(decision)
        front.forget("generic", webhook_id, waiting)
    finally:
        await front.stop()


async def test_a_post_without_webhook_decisions_says_nothing(redis: RedisConnection) -> None:
    board = DecisionBoard(redis, cache_seconds=CACHE_SECONDS)
    staged = dedup.decision("REF-S", "created", source="staging", source_id="1", channel=None)
    async with redis.client.pubsub(ignore_subscribe_messages=True) as pubsub:
        await pubsub.subscribe(DECISIONS_CHANNEL)
        await board.post([staged], {"REF-S": KnownReference("fp", staged.payment_id)})
        await asyncio.sleep(0.3)
        assert await pubsub.get_message(timeout=0.1) is None


async def test_claims_made_together_are_answered_by_one_script_call(
    redis: RedisConnection,
) -> None:
    board = DecisionBoard(redis, cache_seconds=CACHE_SECONDS)
    script = redis.client.register_script(CLAIMS_SCRIPT)
    calls: list[int] = []

    async def counted(keys: list[str], args: list[Any]) -> Any:
        calls.append(int(args[0]))
        return await script(keys=keys, args=args)

    board._claims_script = counted  # the real script, counted
    run = uuid.uuid4().hex[:8]
    cached, fresh = f"REF-C-{run}", f"REF-F-{run}"
    decided = webhook_decision(cached, f"w-decided-{run}")
    await board.claim("generic", f"w-decided-{run}", "hash-d", cached)
    await post_and_hear(
        board, redis, [decided], {cached: KnownReference("fp-c", decided.payment_id)}
    )
    await board.claim("card", f"w-taken-{run}", "hash-first", fresh)
    calls.clear()

    claims = await asyncio.gather(
        board.claim("generic", f"w-new-{run}", "hash-n", fresh),
        board.claim("generic", f"w-decided-{run}", "hash-d", cached),
        board.claim("card", f"w-taken-{run}", "hash-other", fresh),
        board.claim("generic", f"w-new-{run}", "hash-n", fresh),
        board.claim("generic", f"w-other-{run}", "hash-o", cached),
    )

    assert calls == [5]
    assert claims == [
        Claim("new"),
        Claim("seen", Answer.of(decided), "fp-c"),
        Claim("reused"),
        Claim("seen"),
        Claim("new", fingerprint="fp-c"),
    ]
    ttl = await redis.client.ttl(webhook_key("generic", f"w-new-{run}"))
    assert ANSWER_TTL_SECONDS - 60 < ttl <= ANSWER_TTL_SECONDS
    assert await redis.client.get(webhook_key("card", f"w-taken-{run}")) == b"hash-first"


async def test_answers_kept_together_are_stored_and_the_first_stands(
    redis: RedisConnection,
) -> None:
    board = DecisionBoard(redis, cache_seconds=CACHE_SECONDS)
    run = uuid.uuid4().hex[:8]
    duplicate = Answer(200, {"status": "duplicate", "payment_id": run})
    first = Answer(201, {"status": "created", "payment_id": run})
    await redis.client.set(decision_key("card", f"w-first-{run}"), first.encode())

    await asyncio.gather(
        board.remember("generic", f"w-a-{run}", duplicate),
        board.remember("card", f"w-first-{run}", duplicate),
        board.remember("generic", f"w-b-{run}", duplicate),
    )

    for endpoint, webhook_id, answer in [
        ("generic", f"w-a-{run}", duplicate),
        ("card", f"w-first-{run}", first),
        ("generic", f"w-b-{run}", duplicate),
    ]:
        key = decision_key(endpoint, webhook_id)
        assert Answer.decode(await redis.client.get(key)) == answer
    ttl = await redis.client.ttl(decision_key("generic", f"w-a-{run}"))
    assert ANSWER_TTL_SECONDS - 60 < ttl <= ANSWER_TTL_SECONDS
