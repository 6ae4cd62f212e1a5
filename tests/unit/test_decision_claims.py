"""The web views' claims go to Redis together: one script call per event-loop tick (offline).

The script's own semantics run on a real Redis in tests/integration/test_decision_board.py;
here a fake script answers, and the tests check what is sent and who hears what.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.recording.decisions import (
    ANSWER_TTL_SECONDS,
    CLAIMS_SCRIPT,
    Answer,
    Claim,
    DecisionBoard,
    decision_key,
    webhook_key,
)
from app.storage.redis_connection import RedisConnection


class ScriptRedis:
    """Runs CLAIMS_SCRIPT's contract over a dict; records each call's claims."""

    def __init__(self, fail: bool = False) -> None:
        self.values: dict[str, str] = {}
        self.calls: list[list[str]] = []  # the webhook keys of each call
        self.fail = fail
        self.client = self

    def register_script(self, script: str) -> Any:
        assert script == CLAIMS_SCRIPT
        return self._claims

    async def _claims(self, keys: list[str], args: list[Any]) -> list[Any]:
        n = int(args[0])
        assert args[1] == ANSWER_TTL_SECONDS
        self.calls.append(keys[0 : 3 * n : 3])
        await asyncio.sleep(0)  # the round trip
        if self.fail:
            raise RedisConnectionError("Connection refused")
        out: list[Any] = []
        for i in range(n):
            webhook, decision, body = keys[3 * i], keys[3 * i + 1], str(args[4 + 2 * i])
            if webhook not in self.values:
                self.values[webhook] = body
                out += [1, "", "", ""]
            else:
                out += [0, self.values[webhook], self.values.get(decision, ""), ""]
        return out


def board_over(redis: ScriptRedis) -> DecisionBoard:
    return DecisionBoard(cast(RedisConnection, redis), cache_seconds=None)


async def test_the_claims_of_one_tick_go_in_one_call_each_hearing_its_own() -> None:
    redis = ScriptRedis()
    decided = Answer(201, {"status": "created", "payment_id": "p"})
    redis.values[webhook_key("generic", "w-old")] = "hash-old"
    redis.values[decision_key("generic", "w-old")] = decided.encode()
    redis.values[webhook_key("card", "w-taken")] = "hash-first"
    board = board_over(redis)

    claims = await asyncio.gather(
        board.claim("generic", "w-new", "hash-new", "R-1"),
        board.claim("generic", "w-old", "hash-old", "R-2"),
        board.claim("card", "w-taken", "hash-other", "R-3"),
        board.claim("generic", "w-new", "hash-new", "R-1"),  # the same delivery, twice at once
    )

    assert redis.calls == [
        [
            webhook_key("generic", "w-new"),
            webhook_key("generic", "w-old"),
            webhook_key("card", "w-taken"),
            webhook_key("generic", "w-new"),
        ]
    ]
    assert claims == [
        Claim("new"),
        Claim("seen", decided),
        Claim("reused"),
        Claim("seen"),  # undecided: published again, the reference's dedup absorbs it
    ]


async def test_redis_away_leaves_every_claim_of_the_call_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = board_over(ScriptRedis(fail=True))

    claims = await asyncio.gather(
        *(board.claim("generic", f"w-{i}", "h", f"R-{i}") for i in range(7))
    )

    assert claims == [Claim("unchecked")] * 7
    warned = [r.getMessage() for r in caplog.records if "no replay check" in r.getMessage()]
    assert [message.split(":")[0] for message in warned] == [f"webhook w-{i}" for i in range(7)]
