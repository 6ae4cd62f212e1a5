"""The dashboard and the alert rules against a real Prometheus scraping a worker under a known load.

The stack's Prometheus (``scripts/stack up prometheus``, 1 s scrapes) scrapes a worker's
METRICS_PORT while it records a known load: staged rows, and signed webhooks through the
worker's own port and its webhook front (the worker's /metrics sums the front's counts, so
the front is not scraped on its own: that would count it twice). Then every expression of
ops/grafana/payment-service.json and of ops/alerts.yml is evaluated through Prometheus'
HTTP API: each must be valid and return series, and the duplicate rate must be the one the
load implies.

Alert expressions return series only while they fire, so each is evaluated whole (valid
PromQL) and without its comparison (its left-hand side returns series), and every metric
name it reads must have series in Prometheus.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import yaml

from tests.pipeline import app_env, fresh_pipeline, stage
from tests.stack import ROOT, Stack, Worker, free_port, prometheus, run_worker, wait_for
from tests.webhook_client import signed

DASHBOARD = ROOT / "ops" / "grafana" / "payment-service.json"
RULES = ROOT / "ops" / "alerts.yml"
SECRET = "whsec_" + "cHJvbWV0aGV1cyB0ZXN0IHNpZ25pbmcgc2VjcmV0IQ=="
WEBHOOK = "/api/v1/payments/webhook"
LISTENING = re.compile(r"webhook front 0 \(pid \d+\) listening")

#: The load: unique webhooks and exact repeats of some of them (new webhook ids).
UNIQUE = 12
REPEATS = 4

#: Prometheus' URL, and when the measured load started and ended (all of it scraped).
Loaded = tuple[str, float, float]

COMPARISON = re.compile(r"\s(>=|<=|==|!=|>|<)\s")
METRIC = re.compile(r"\b(payments_[a-z_]+)")


def query(url: str, expr: str, at: float | None = None) -> list[dict[str, Any]]:
    """An instant query's result; fails with Prometheus' error when the expression is invalid."""
    params = {"query": expr} | ({} if at is None else {"time": f"{at:.3f}"})
    return _api(url, "query", params, expr)


def query_range(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """A range query's series, one step a second: what a Grafana panel asks for.

    A scrape slower than its 1 s timeout (a busy machine) marks every series stale
    until the next one, so an instant query may find nothing at that moment.
    """
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1"}
    return _api(url, "query_range", params, expr)


def _api(url: str, endpoint: str, params: dict[str, str], expr: str) -> list[dict[str, Any]]:
    address = f"{url}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(address, timeout=10) as response:  # noqa: S310 (loopback)
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{expr!r}: {exc.read().decode()}") from None
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def exported(url: str, start: float, end: float) -> set[str]:
    """The names of the service's metrics Prometheus holds samples of between the two times."""
    found = query_range(url, 'count by (__name__) ({__name__=~"payments_.+"})', start, end)
    return {series["metric"]["__name__"] for series in found}


def latest(url: str, expr: str) -> float:
    """The expression's value now (a one-series result), 0 when it has none at this moment."""
    found = query(url, expr)
    return float(found[0]["value"][1]) if found else 0.0


def dashboard_exprs(window: str) -> list[tuple[str, str]]:
    """(panel title, expression) for every target, Grafana's interval variables set."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", window))
        for panel in panels
        for target in panel["targets"]
    ]


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    return [(rule["alert"], " ".join(rule["expr"].split())) for rule in rules]


def notice(reference: str, webhook_id: str) -> tuple[bytes, dict[str, str]]:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": 42.5,
        "payment_date": datetime.now(UTC).date().isoformat(),
    }
    raw = json.dumps(body).encode()
    return raw, signed(SECRET, raw, msg_id=webhook_id)


def send(served: Worker, reference: str) -> int:
    return served.post(WEBHOOK, *notice(reference, uuid.uuid4().hex))[0]


@pytest.fixture(scope="module")
def loaded(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    asyncio.run(fresh_pipeline(stack))
    run = uuid.uuid4().hex[:8]
    front_port = free_port()
    env = app_env(run, WEBHOOK_SECRET=SECRET, WEBHOOK_PROCESSES="1", WEBHOOK_PORT=str(front_port))
    with run_worker(
        stack, tmp_path_factory.mktemp("prometheus"), METRICS_PORT="free", **env
    ) as worker:
        front = Worker(worker.process, f"http://127.0.0.1:{front_port}", worker.log_path)
        wait_for(lambda: LISTENING.search(worker.log()), timeout=90, what="the webhook front")

        def decides() -> bool:
            worker.assert_alive()
            try:
                return send(front, f"PROM-{run}-WARM-{uuid.uuid4().hex[:6]}") == 201
            except OSError:
                return False

        wait_for(decides, timeout=120, interval=1, what="a webhook decided through the front")
        target = f"127.0.0.1:{worker.metrics_port}"
        with prometheus(stack, [target]) as url:
            wait_for(
                lambda: [s for s in query(url, "up") if s["value"][1] == "1"],
                timeout=30,
                what="Prometheus scraping the worker's METRICS_PORT",
            )
            # Every series the load moves exists before T0: a 201 and a 200, staged rows.
            now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
            staged = [
                (f"PROM-{run}-S{n}", "LA1", "CIF1", Decimal("5.00"), now, "cash", "{}")
                for n in range(20)
            ]
            asyncio.run(stage(stack, staged))
            for n in range(2):
                assert send(worker, f"PROM-{run}-W{n}") == 201
                assert send(front, f"PROM-{run}-W{n}") == 200
            wait_for(
                lambda: latest(url, "sum(payments_staging_rows_total)") >= 20,
                timeout=60,
                what="the staged rows counted in Prometheus",
            )
            time.sleep(5)  # flat counters for a few scrapes before the load
            started = time.time()
            # A scrape is stamped when it starts and may take a second to collect (a busy
            # machine): none stamped before `started` may see the load.
            time.sleep(2)
            references = [f"PROM-{run}-{n}" for n in range(UNIQUE)]
            answers = [send(worker if n % 2 else front, r) for n, r in enumerate(references)]
            repeats = references[:REPEATS]
            answers += [send(front if n % 2 else worker, r) for n, r in enumerate(repeats)]
            assert answers == [201] * UNIQUE + [200] * REPEATS
            total = 'sum(payments_webhook_duration_seconds_count{status=~"200|201"})'
            expected = 1 + 2 * 2 + UNIQUE + REPEATS  # the front's first 201, the warm-up, the load
            wait_for(
                lambda: latest(url, total) >= expected,
                timeout=30,
                what="the load's answers scraped",
            )
            time.sleep(3)
            yield url, started, time.time()


def test_every_dashboard_panel_returns_series(loaded: Loaded) -> None:
    url, started, ended = loaded
    empty = [
        (title, expr)
        for title, expr in dashboard_exprs("1m")
        if not query_range(url, expr, started, ended)
    ]
    assert empty == []


def test_every_alert_expression_is_valid_and_reads_metrics_that_exist(
    loaded: Loaded,
) -> None:
    url, started, ended = loaded
    names = exported(url, started, ended)
    missing: dict[str, list[str]] = {}
    for alert, expr in alert_exprs():
        query(url, expr)  # valid: Prometheus evaluates it (usually to nothing: not firing)
        left = COMPARISON.split(expr)[0]
        if not query_range(url, left, started, ended):
            missing.setdefault(alert, []).append(f"no series: {left}")
        for name in METRIC.findall(expr):
            if name not in names:
                missing.setdefault(alert, []).append(f"no metric {name}")
    assert missing == {}


def test_every_metric_the_dashboard_reads_exists(loaded: Loaded) -> None:
    url, started, ended = loaded
    names = exported(url, started, ended)
    used = {name for _, expr in dashboard_exprs("1m") for name in METRIC.findall(expr)}
    assert used - names == set()


def counted(url: str, selector: str, at: float) -> float:
    """The summed counter at ``at``: its last scrape, however many slow ones timed out since."""
    return float(query(url, f"sum(max_over_time({selector}[30s]))", at=at)[0]["value"][1])


def test_the_duplicate_rate_is_the_loads(loaded: Loaded) -> None:
    url, started, ended = loaded
    implied = REPEATS / (UNIQUE + REPEATS)
    # Exactly, from the counters Prometheus scraped before and after the load.
    answered = {
        status: counted(url, f'payments_webhook_duration_seconds_count{{status="{status}"}}', ended)
        - counted(url, f'payments_webhook_duration_seconds_count{{status="{status}"}}', started)
        for status in ("200", "201")
    }
    assert answered == {"200": REPEATS, "201": UNIQUE}
    # The dashboard's lines over a window from the flat seconds before the load: rate()
    # extrapolates each series to the window's ends, and on a loaded machine a late scrape
    # moves a series' ends by a second or two, so a line is the load's ratio within 0.03
    # (0.24 for 0.25 was seen); the exact counts are asserted above. A wrong expression
    # (the ratio inverted, 201s counted as duplicates, decisions of one layer only) is
    # further off.
    window = f"{int(ended - started) + 4}s"
    panel = next(
        panel
        for panel in json.loads(DASHBOARD.read_text())["panels"]
        if panel["title"] == "Duplicate rate"
    )
    rates = {
        target["legendFormat"]: target["expr"].replace("$__rate_interval", window)
        for target in panel["targets"]
    }
    answers = query(url, rates["webhook answers"], at=ended)
    assert float(answers[0]["value"][1]) == pytest.approx(implied, abs=0.03)
    per_decision = rates["per decision"]
    decided = query(url, per_decision, at=ended)
    assert float(decided[0]["value"][1]) == pytest.approx(implied, abs=0.03)
