"""The webhook benchmark: signed notices against one worker, next to a bare handler (the ceiling).

Run it with ``bench/webhooks`` (which brings its own stack up). Requests are
signed before the clock starts: unique references, plus a share that repeat an
earlier payment under a new webhook-id (answered ``duplicate``). They go first to
the service (one worker, synchronous answers), then the same way to
``bench.webhook_ceiling`` (aiohttp + the same signature check, nothing else). It
prints req/s, p50/p95/p99 and the answers of each, the ratio, and checks that the
service recorded a payment for every first ``201`` it answered.

Three ways to send them:
- ``--client python`` (the default): aiohttp at a fixed concurrency (closed loop);
  ``--concurrency 1`` is the lone case, one request after another (the
  percentiles of its ``201`` answers);
- ``--client wrk``: Debian's ``wrk`` at a fixed concurrency for ``--duration``
  seconds, cycling through the signed requests (``bench/webhooks.lua``): a load
  generator in C that leaves the cores to the service;
- ``--rate R``: open loop, one request every 1/R s for ``--duration`` seconds
  whatever the answers; latencies count from each request's scheduled time and
  the percentiles are those of the ``201`` answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import targets
from tests.pipeline import app_env, fetch, fresh_pipeline, run_id
from tests.stack import ROOT, Stack, free_port, native_stack, native_stack_env, run_worker, wait_for
from tests.webhook_client import signed

WEBHOOK = "/api/v1/payments/webhook"
SECRET = "whsec_" + "YmVuY2ggd2ViaG9va3Mgc2lnbmluZyBzZWNyZXQ="
WRK_SCRIPT = Path(__file__).with_name("webhooks.lua")
RECORDED = "SELECT count(*) FROM payment_service.payments WHERE reference_number LIKE $1"

Request = tuple[bytes, dict[str, str]]


@dataclass
class Outcome:
    """One load's figures: answers by status (``"201 replay"`` apart) and latencies in seconds."""

    seconds: float
    answers: Counter[str]
    p50: float
    p95: float
    p99: float
    #: Requests still unanswered when the load stopped (wrk closes them at its deadline).
    unanswered: int = 0
    #: The open loop's worst delay behind its schedule (the load generator's own lag).
    behind: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.answers.values())

    @classmethod
    def of(cls, seconds: float, latencies: list[float], answers: Counter[str]) -> Outcome:
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
        if not cuts:
            raise SystemExit("no request was answered 201: see the worker log")
        return cls(seconds, answers, cuts[49], cuts[94], cuts[98])


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


def answer_of(status: int, headers: Mapping[str, str]) -> str:
    """The status, with ``replay`` for an answer repeated for a webhook-id seen before."""
    return f"{status} replay" if "Idempotent-Replay" in headers else str(status)


async def drive(
    url: str, requests: list[Request], concurrency: int, *, created_only: bool = False
) -> Outcome:
    """Send ``requests`` with ``concurrency`` in flight (closed loop); latencies of every
    answer, or with ``created_only`` of the ``201`` answers."""
    pending = iter(requests)
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender() -> None:
            for body, headers in pending:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    answer = answer_of(response.status, response.headers)
                answers[answer] += 1
                if answer == "201" or not created_only:
                    latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(concurrency)))
        return Outcome.of(time.perf_counter() - started, latencies, answers)


async def drive_at_rate(url: str, requests: list[Request], rate: float) -> Outcome:
    """Send request n at ``n / rate`` s whatever the answers (open loop); 201s' latencies."""
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    behind = 0.0
    # No pool limit: a slow answer must not hold the next request back.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def send(due: float, body: bytes, headers: dict[str, str]) -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                answer = answer_of(response.status, response.headers)
            answers[answer] += 1
            if answer == "201":
                # From the scheduled time, as the sender sees it: a late send counts too.
                latencies.append(time.perf_counter() - due)

        started = time.perf_counter()
        sends = []
        for n, (body, headers) in enumerate(requests):
            due = started + n / rate
            wait = due - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            behind = max(behind, -wait)
            sends.append(asyncio.create_task(send(due, body, headers)))
        await asyncio.gather(*sends)
    outcome = Outcome.of(time.perf_counter() - started, latencies, answers)
    outcome.behind = behind
    return outcome


def request_lines(requests: list[Request]) -> str:
    """The requests as ``bench/webhooks.lua`` reads them: id, timestamp, signature, body."""
    lines = []
    for body, headers in requests:
        fields = [
            headers["webhook-id"],
            headers["webhook-timestamp"],
            headers["webhook-signature"],
            body.decode(),
        ]
        if any("\t" in field or "\n" in field for field in fields):
            raise ValueError(f"request {headers['webhook-id']} holds a tab or a newline")
        lines.append("\t".join(fields) + "\n")
    return "".join(lines)


def wrk_outcome(output: str, connections: int) -> Outcome:
    """The figures of ``bench/webhooks.lua``'s JSON line among wrk's output."""
    line = next((text for text in output.splitlines() if text.startswith('{"seconds"')), None)
    if line is None:
        raise SystemExit(f"wrk printed no result line (is bench/webhooks.lua intact?):\n{output}")
    figures = json.loads(line)
    errors = figures["errors"]
    failed = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    if failed:
        raise SystemExit(
            f"wrk reported socket errors {errors}: a request was not answered; "
            "see the worker log (timeouts: fewer --concurrency, or a longer --duration)"
        )
    return Outcome(
        figures["seconds"],
        Counter(figures["answers"]),
        figures["p50_us"] / 1e6,
        figures["p95_us"] / 1e6,
        figures["p99_us"] / 1e6,
        unanswered=connections,
    )


def drive_wrk(
    url: str, requests: list[Request], connections: int, threads: int, seconds: float
) -> Outcome:
    """``wrk`` with ``connections`` open for ``seconds``, cycling through ``requests``."""
    with tempfile.NamedTemporaryFile("w", prefix="bench-webhooks-", suffix=".tsv") as file:
        file.write(request_lines(requests))
        file.flush()
        command = [
            "wrk",
            f"--threads={threads}",
            f"--connections={max(connections, threads)}",
            f"--duration={seconds:g}s",
            "--timeout=30s",
            f"--script={WRK_SCRIPT}",
            url,
            "--",
            file.name,
            str(threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return wrk_outcome(done.stdout, connections)


def describe(name: str, outcome: Outcome) -> float:
    rate = outcome.count / outcome.seconds
    answers = ", ".join(f"{answer}: {count}" for answer, count in sorted(outcome.answers.items()))
    behind = f"; at most {outcome.behind * 1000:.1f} ms behind schedule" if outcome.behind else ""
    print(
        f"{name}: {outcome.count:,} requests in {outcome.seconds:.1f} s = {rate:,.0f} req/s; "
        f"p50 {outcome.p50 * 1000:.1f} ms, p95 {outcome.p95 * 1000:.1f} ms, "
        f"p99 {outcome.p99 * 1000:.1f} ms; "
        f"answers {answers}{behind}",
        flush=True,
    )
    return rate


def check_recorded(stack: Stack, run: str, outcome: Outcome) -> None:
    """Every first ``201`` has its payment, and nothing beyond what may have been created."""
    created = outcome.answers["201"]
    # A 202 is recorded later; a request wrk closed at its deadline may have been too.
    most = created + outcome.answers["202"] + outcome.unanswered
    recorded = fetch(stack, RECORDED, f"W{run}-%")[0][0]
    print(f"recorded: {recorded:,} payments for {created:,} first 201 answers", flush=True)
    if not created <= recorded <= most:
        raise SystemExit(
            f"the service answered 201 {created:,} times (at most {most:,} payments possible) "
            f"but recorded {recorded:,} payments: a decision and the database disagree; "
            "see the worker log"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=("python", "wrk"), default="python")
    parser.add_argument("--requests", type=int, default=20_000, help="signed requests")
    parser.add_argument("--concurrency", type=int, default=256, help="1: the lone case")
    parser.add_argument("--threads", type=int, default=1, help="wrk's threads")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--duration", type=float, default=10, help="seconds (wrk and --rate)")
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
    if args.rate and args.client == "wrk":
        parser.error("--rate sends from Python: leave out --client wrk")
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is missing: scripts/bootstrap installs it (Debian: apt-get install wrk)")
    count = round(args.rate * args.duration) if args.rate else args.requests
    lone = not args.rate and args.client == "python" and args.concurrency == 1

    def load(url: str, requests: list[Request]) -> Outcome:
        if args.rate:
            return asyncio.run(drive_at_rate(url, requests, args.rate))
        if args.client == "wrk":
            return drive_wrk(url, requests, args.concurrency, args.threads, args.duration)
        return asyncio.run(drive(url, requests, args.concurrency, created_only=lone))

    if args.rate:
        mode = f"open loop at {args.rate:g} req/s for {args.duration:g} s, 201s' latencies"
    elif lone:
        mode = "lone: one request at a time on an otherwise idle service, 201s' latencies"
    elif args.client == "wrk":
        mode = f"wrk, concurrency {args.concurrency} for {args.duration:g} s"
    else:
        mode = f"python client, concurrency {args.concurrency}"

    stack = native_stack(native_stack_env())
    run = run_id()
    asyncio.run(fresh_pipeline(stack))
    print(f"signing {count:,} requests ({mode}) ...", flush=True)
    warmup = make_requests(500, 0, f"{run}w")
    requests = make_requests(count, args.duplicates, run)
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
        asyncio.run(drive(url, warmup, 64))
        time.sleep(1)  # the warm-up's batches done: the load starts on an idle service
        outcome = load(url, requests)
        service = describe("lone service" if lone else "service", outcome)
        check_recorded(stack, run, outcome)
        worker.assert_alive()

    port = free_port()
    ceiling_process = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_ceiling", str(port), SECRET], cwd=ROOT
    )
    try:
        ceiling_url = f"http://127.0.0.1:{port}{WEBHOOK}"
        wait_for(lambda: _answers(ceiling_url), timeout=30, what="the ceiling server")
        asyncio.run(drive(ceiling_url, warmup, 64))
        ceiling = describe("ceiling", load(ceiling_url, requests))
    finally:
        ceiling_process.terminate()
        ceiling_process.wait(timeout=10)
    print(f"ratio service/ceiling: {service / ceiling:.3f}; worker log under {folder}")
    verdicts = targets.webhooks(
        client=args.client,
        rate=args.rate,
        concurrency=args.concurrency,
        req_s=service,
        p50=outcome.p50,
        p95=outcome.p95,
    )
    print(targets.report(verdicts))


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
