"""Slow senders on the real stack: a trickled body gets 408, past the cap 503; others go on.

One worker with one front process, each with WEBHOOK_BODY_TIMEOUT_SECONDS=4 and
WEBHOOK_MAX_CONCURRENT_REQUESTS=3; every test runs on the worker's own port and
on the front's.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from tests.pipeline import app_env, fresh_pipeline
from tests.stack import Stack, free_port, run_worker, wait_for
from tests.webhook_client import signed

SECRET = "whsec_" + "c2xvdyBzZW5kZXJzIHNpZ25pbmcgc2VjcmV0IGhlcmU="
WEBHOOK = "/api/v1/payments/webhook"
RUN = uuid.uuid4().hex[:8]
BODY_TIMEOUT = 4.0
CAP = 3


def notice(reference: str) -> tuple[bytes, dict[str, str]]:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": 12.5,
        "payment_date": "2026-11-27",
    }
    raw = json.dumps(body).encode()
    return raw, signed(SECRET, raw, msg_id=f"{reference}-{uuid.uuid4().hex[:6]}")


def decides(url: str) -> bool:
    async def post() -> int:
        raw, headers = notice(f"WARM-{uuid.uuid4().hex[:10]}")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url + WEBHOOK, data=raw, headers=headers) as response,
            ):
                return response.status
        except aiohttp.ClientError:
            return 0

    return asyncio.run(post()) == 201


@pytest.fixture(scope="module")
def ports(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The base URLs of the worker's own web server and of its front."""
    asyncio.run(fresh_pipeline(stack))
    front_port = free_port()
    env = app_env(
        f"slow-{RUN}",
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_PROCESSES="1",
        WEBHOOK_PORT=str(front_port),
        WEBHOOK_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        WEBHOOK_MAX_CONCURRENT_REQUESTS=str(CAP),
    )
    with run_worker(stack, tmp_path_factory.mktemp("slow"), **env) as worker:
        worker.wait_web()
        urls = {"worker": worker.base_url, "front": f"http://127.0.0.1:{front_port}"}
        for url in urls.values():
            wait_for(lambda url=url: decides(url), timeout=90, interval=1, what=f"201 on {url}")
        yield urls


class Trickler:
    """A sender that announces a body and sends it one byte a second."""

    def __init__(self, url: str) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.raw, self.headers = notice(f"SLOW-{RUN}-{uuid.uuid4().hex[:8]}")

    async def send(self) -> tuple[int, dict[str, str], float]:
        """The answer's status and headers, and the seconds from the request's headers to it."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        lines = [
            f"POST {WEBHOOK} HTTP/1.1",
            f"Host: {self.host}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.raw)}",
            *(f"{name}: {value}" for name, value in self.headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        started = time.monotonic()

        async def trickle() -> None:
            for byte in self.raw:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(1)

        sending = asyncio.create_task(trickle())
        try:
            # Without a read timeout the server waits for the whole body (minutes).
            status_line = await asyncio.wait_for(reader.readline(), BODY_TIMEOUT + 10)
            took = time.monotonic() - started
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
        finally:
            sending.cancel()
            writer.close()
        return int(status_line.split()[1]), headers, took


async def post(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, str]]:
    raw, headers = notice(f"GOOD-{RUN}-{uuid.uuid4().hex[:8]}")
    async with session.post(url + WEBHOOK, data=raw, headers=headers) as response:
        return response.status, dict(response.headers)


@pytest.mark.parametrize("where", ["worker", "front"])
def test_a_trickled_body_gets_408_within_the_timeout_and_others_are_answered(
    ports: dict[str, str], where: str
) -> None:
    url = ports[where]

    async def scenario() -> tuple[tuple[int, dict[str, str], float], int]:
        async with aiohttp.ClientSession() as session:
            slow = asyncio.create_task(Trickler(url).send())
            await asyncio.sleep(1)
            good, _ = await post(session, url)  # sent while the trickler holds its request
            return await slow, good

    (status, headers, took), good = asyncio.run(scenario())
    assert good == 201
    assert status == 408
    assert headers["connection"] == "close"
    assert BODY_TIMEOUT - 0.5 <= took <= BODY_TIMEOUT + 2


@pytest.mark.parametrize("where", ["worker", "front"])
def test_past_the_cap_503_with_retry_after_and_under_it_answers(
    ports: dict[str, str], where: str
) -> None:
    url = ports[where]

    async def scenario() -> dict[str, object]:
        seen: dict[str, object] = {}
        async with aiohttp.ClientSession() as session:
            slow = [asyncio.create_task(Trickler(url).send()) for _ in range(CAP - 1)]
            await asyncio.sleep(0.5)
            seen["under the cap"] = (await post(session, url))[0]
            slow.append(asyncio.create_task(Trickler(url).send()))
            await asyncio.sleep(0.5)
            status, headers = await post(session, url)
            seen["at the cap"] = (status, headers.get("Retry-After"))
            seen["tricklers"] = sorted(answer[0] for answer in await asyncio.gather(*slow))
            seen["after them"] = (await post(session, url))[0]
        return seen

    assert asyncio.run(scenario()) == {
        "under the cap": 201,
        "at the cap": (503, "1"),
        "tricklers": [408] * CAP,
        "after them": 201,
    }
