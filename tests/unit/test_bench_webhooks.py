"""bench/webhooks' load generators: wrk's request file and Lua script, and the open loop.

They run against a small aiohttp handler in the test's own event loop (no stack):
it checks each request's Standard Webhooks signature and answers a webhook-id seen
before as the service does, with ``Idempotent-Replay``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from bench.webhooks import (
    SECRET,
    drive,
    drive_at_rate,
    drive_wrk,
    make_requests,
    request_lines,
    wrk_outcome,
)


@dataclass
class Receiver:
    """What the handler saw: webhook-ids in arrival order, and when each came."""

    url: str
    ids: list[str] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    bodies: set[bytes] = field(default_factory=set)


async def receiver(delay: float = 0, slow_duplicates: float = 0) -> AsyncIterator[Receiver]:
    signer = Webhook(SECRET)
    seen = Receiver(url="")

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        seen.arrivals.append(time.perf_counter())
        signer.verify(body.decode(), dict(request.headers), json_parse=False)  # raises: a 500
        webhook_id = request.headers["webhook-id"]
        replay = webhook_id in seen.ids
        seen.ids.append(webhook_id)
        await asyncio.sleep(delay)
        if replay:  # the service repeats the first answer; every first is a 201 in the wrk test
            return web.json_response(
                {"status": "created"}, status=201, headers={"Idempotent-Replay": "true"}
            )
        if body in seen.bodies:
            await asyncio.sleep(slow_duplicates)
            return web.json_response({"status": "duplicate"}, status=200)
        seen.bodies.add(body)
        return web.json_response({"status": "created"}, status=201)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # started above
    seen.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield seen
    finally:
        await runner.cleanup()


@pytest.fixture
async def fast() -> AsyncIterator[Receiver]:
    async for seen in receiver():
        yield seen


@pytest.fixture
async def slow_duplicates() -> AsyncIterator[Receiver]:
    async for seen in receiver(slow_duplicates=0.1):
        yield seen


@pytest.fixture
async def slow() -> AsyncIterator[Receiver]:
    async for seen in receiver(delay=0.3):
        yield seen


def test_request_lines_hold_the_signed_headers_and_body() -> None:
    requests = make_requests(3, 0, "lines")
    lines = request_lines(requests).splitlines()
    assert [line.split("\t") for line in lines] == [
        [h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"], body.decode()]
        for body, h in requests
    ]


def test_a_tab_in_a_request_is_refused() -> None:
    body, headers = make_requests(1, 0, "tab")[0]
    with pytest.raises(ValueError, match="tab or a newline"):
        request_lines([(body + b"\t", headers)])


def test_wrk_output_is_read_from_the_lua_line() -> None:
    line = {
        "seconds": 2.0,
        "requests": 30,
        "p50_us": 1500,
        "p95_us": 9000,
        "p99_us": 12000,
        "errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "answers": {"201": 25, "200": 3, "201 replay": 2},
    }
    outcome = wrk_outcome("Running 2s test\n" + json.dumps(line) + "\n", connections=8)
    assert (outcome.count, outcome.seconds, outcome.unanswered) == (30, 2.0, 8)
    assert (outcome.p50, outcome.p95, outcome.p99) == (0.0015, 0.009, 0.012)
    assert outcome.answers == Counter({"201": 25, "200": 3, "201 replay": 2})
    line["errors"] = {"connect": 0, "read": 0, "write": 0, "timeout": 1}
    with pytest.raises(SystemExit, match="socket errors"):
        wrk_outcome(json.dumps(line), connections=8)


async def test_wrk_cycles_through_every_signed_request(fast: Receiver) -> None:
    requests = make_requests(40, 0, "wrk")
    outcome = await asyncio.to_thread(drive_wrk, fast.url, requests, 4, 2, 1)
    signed = {headers["webhook-id"] for _, headers in requests}
    firsts = list(dict.fromkeys(fast.ids))
    # Every signed request went (each thread cycles through its own share of them).
    assert set(firsts) == signed
    assert outcome.answers["201"] == len(signed)
    assert outcome.answers["201 replay"] == outcome.count - len(signed) > 0
    assert set(outcome.answers) == {"201", "201 replay"}  # a bad signature would be a 500
    assert 0 < outcome.p50 <= outcome.p95 <= outcome.p99


async def test_the_open_loop_sends_on_schedule_whatever_the_answers(slow: Receiver) -> None:
    requests = make_requests(20, 0, "rate")
    outcome = await drive_at_rate(slow.url, requests, rate=100)
    # Each answer takes 0.3 s: a closed loop of one would send every 0.3 s and need 6 s.
    assert outcome.seconds < 1.5
    assert slow.arrivals[-1] - slow.arrivals[0] < 0.6  # 19 gaps of 10 ms on schedule
    gaps = [later - earlier for earlier, later in itertools.pairwise(slow.arrivals)]
    assert statistics.median(gaps) < 0.02
    assert outcome.answers == Counter({"201": 20})
    assert outcome.p50 >= 0.3


async def test_the_lone_case_times_the_201_answers_only(slow_duplicates: Receiver) -> None:
    requests = make_requests(20, 0.3, "lone")
    outcome = await drive(slow_duplicates.url, requests, 1, created_only=True)
    assert outcome.answers["200"] > 0  # the repeats, answered after 0.1 s
    assert outcome.p99 < 0.1
    everything = await drive(slow_duplicates.url, make_requests(20, 0.3, "all"), 1)
    assert everything.p99 >= 0.1
