"""The webhook benchmark: signed notices against one worker, next to a bare handler (the ceiling).

Run it with ``bench/webhooks`` (which brings its own stack up). N requests are
signed before the clock starts: unique references, plus a share that repeat an
earlier payment under a new webhook-id (answered ``duplicate``). They are sent
at a fixed concurrency, first to the service (one worker, synchronous answers),
then to ``bench.webhook_ceiling`` (aiohttp + the same signature check, nothing
else). It prints req/s, p50/p95/p99 and the answers of each, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp

from tests.pipeline import app_env, fresh_pipeline, run_id
from tests.stack import ROOT, free_port, native_stack, native_stack_env, run_worker, wait_for
from tests.webhook_client import signed

WEBHOOK = "/api/v1/payments/webhook"
SECRET = "whsec_" + "YmVuY2ggd2ViaG9va3Mgc2lnbmluZyBzZWNyZXQ="

Request = tuple[bytes, dict[str, str]]


def make_requests(count: int, duplicates: float, run: str) -> list[Request]:
    """``count`` signed notices; a ``duplicates`` share repeat an earlier payment."""
    chooser = random.Random(run)  # noqa: S311  # test data, seeded for replays
    bodies: list[bytes] = []
    requests: list[Request] = []
    for n in range(count):
        if bodies and chooser.random() < duplicates:
            body = chooser.choice(bodies)
        else:
            body = json.dumps(
                {
                    "reference_number": f"W{run}-{n:07d}",
                    "loan_account_number": f"LN{chooser.randrange(10**6):07d}",
                    "cif": f"C{chooser.randrange(10**6):07d}",
                    "amount": round(chooser.uniform(1, 10**6), 2),
                    "payment_date": "2026-11-27",
                    "payment_channel": "bench",
                }
            ).encode()
            bodies.append(body)
        requests.append((body, signed(SECRET, body, msg_id=f"{run}-{n}")))
    return requests


async def drive(
    url: str, requests: list[Request], concurrency: int
) -> tuple[float, list[float], Counter[int]]:
    """Send ``requests`` with ``concurrency`` in flight; (seconds, latencies, statuses)."""
    pending = iter(requests)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender() -> None:
            for body, headers in pending:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, statuses


def describe(name: str, seconds: float, latencies: list[float], statuses: Counter[int]) -> float:
    rate = len(latencies) / seconds
    cuts = statistics.quantiles(latencies, n=100)
    answers = ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
    print(
        f"{name}: {len(latencies):,} requests in {seconds:.1f} s = {rate:,.0f} req/s; "
        f"p50 {cuts[49] * 1000:.0f} ms, p95 {cuts[94] * 1000:.0f} ms, "
        f"p99 {cuts[98] * 1000:.0f} ms; "
        f"answers {answers}",
        flush=True,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of repeats")
    parser.add_argument(
        "--webhook-processes",
        type=int,
        default=2,
        help="WEBHOOK_PROCESSES (0: the worker's own web server answers)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a worker setting"
    )
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)

    stack = native_stack(native_stack_env())
    run = run_id()
    asyncio.run(fresh_pipeline(stack))
    print(f"signing {args.requests:,} requests ...", flush=True)
    warmup = make_requests(500, 0, f"{run}w")
    requests = make_requests(args.requests, args.duplicates, run)
    folder = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    defaults = {"WEBHOOK_SECRET": SECRET, "LOG_LEVEL": "warning", "DB_POOL_MAX": "20"}
    front_port = free_port()
    if args.webhook_processes:
        defaults |= {
            "WEBHOOK_PROCESSES": str(args.webhook_processes),
            "WEBHOOK_PORT": str(front_port),
        }
    env = app_env(run, **(defaults | settings))
    with run_worker(stack, folder, **env) as worker:
        worker.wait_web()
        url = worker.base_url + WEBHOOK
        if args.webhook_processes:
            url = f"http://127.0.0.1:{front_port}{WEBHOOK}"

        def decides() -> bool:
            body, headers = make_requests(1, 0, uuid.uuid4().hex[:8])[0]
            return _post(url, body, headers) == 201

        wait_for(decides, timeout=120, interval=1, what="synchronous answers")
        asyncio.run(drive(url, warmup, args.concurrency))
        service = describe("service", *asyncio.run(drive(url, requests, args.concurrency)))
        worker.assert_alive()

    port = free_port()
    ceiling_process = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_ceiling", str(port), SECRET], cwd=ROOT
    )
    try:
        ceiling_url = f"http://127.0.0.1:{port}{WEBHOOK}"
        wait_for(lambda: _answers(ceiling_url), timeout=30, what="the ceiling server")
        asyncio.run(drive(ceiling_url, warmup, args.concurrency))
        ceiling = describe("ceiling", *asyncio.run(drive(ceiling_url, requests, args.concurrency)))
    finally:
        ceiling_process.terminate()
        ceiling_process.wait(timeout=10)
    print(f"ratio service/ceiling: {service / ceiling:.3f}; worker log under {folder}")


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    async def post() -> int:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url, data=body, headers=headers) as response,
            ):
                return response.status
        except aiohttp.ClientError:
            return 0

    return asyncio.run(post())


def _answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.post(url, data=b"{}") as r:
                return r.status == 401
        except aiohttp.ClientError:
            return False

    return asyncio.run(probe())


if __name__ == "__main__":
    main()
