"""A Redis that runs DecisionBoard.post's Lua script (POST_SCRIPT) in Python, for unit tests.

It follows the script's contract (KEYS and ARGV as the module doc of
app/recording/decisions.py describes them) and keeps the commands the script would
run, in order. tests/integration/test_decision_board.py runs the real script.
"""

from __future__ import annotations

import json
from typing import Any

from app.recording.decisions import POST_SCRIPT


class FakeRedis:
    def __init__(self) -> None:
        #: Every key a decision was stored under, in order.
        self.keys: list[str] = []
        #: The commands the script ran: set, hset, expire, publish.
        self.ops: list[str] = []
        self.values: dict[str, str] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        #: Each announcement, parsed: a list of [waiting key, answer].
        self.announcements: list[Any] = []
        self.client = self

    def register_script(self, script: str) -> Any:
        assert script == POST_SCRIPT, "only DecisionBoard.post's script runs here"
        return self._post

    async def _post(self, keys: list[str], args: list[Any]) -> int:
        n = int(args[0])
        announced = []
        for i in range(n):
            answer, waiting = str(args[4 + 2 * i]), str(args[5 + 2 * i])
            self.ops.append("set")
            self.keys.append(keys[i])
            self.values.setdefault(keys[i], answer)  # NX: the first answer stands
            announced.append([waiting, self.values[keys[i]]])
        # keys[n : 2 * n]: the ids' waiters; none registered here, so one announcement on
        # the shared channel (tests/integration/test_decision_board.py routes them).
        if len(keys) > 2 * n:
            pairs = args[4 + 2 * n :]
            hash_key = keys[2 * n]
            self.hashes.setdefault(hash_key, {}).update(zip(pairs[::2], pairs[1::2], strict=True))
            self.ops += ["hset", "expire"]
        self.ops.append("publish")
        self.announcements.append(json.loads(json.dumps(announced)))
        return n
