"""Roles on the stats and admin endpoints, one audit row per operator action, and no leaks.

On the real stack: a worker with a viewer and an operator token, secrets given
through ``<NAME>_FILE``; the role matrix over HTTP, the audit rows that the
command line, HTTP and a secret rotation leave, and a grep of every log line and
answer for the secrets.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.ops.authorization import new_token
from tests.pipeline import app_env, command, fetch, fresh_pipeline, ok
from tests.stack import Stack, Worker, run_worker
from tests.webhook_client import signed

VIEWER, VIEWER_ENTRY = new_token("grafana", "viewer")
OPERATOR, OPERATOR_ENTRY = new_token("alice", "operator")
SECRET = "whsec_" + "c2VjdXJpdHkgdGVzdCBzZWNyZXQgbm90IHRvIGxlYWs="
ROTATED = "whsec_" + "cm90YXRlZCBzZWN1cml0eSB0ZXN0IHNlY3JldCEhIQ=="
WEBHOOK = "/api/v1/payments/webhook"


def secret_files(stack: Stack, folder: Path, webhook_secret: str) -> dict[str, str]:
    """The worker's secrets as files, the way Docker and Kubernetes hand them over."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "db").write_text(stack.db_password + "\n")
    (folder / "webhook").write_text(webhook_secret + "\n")
    (folder / "tokens").write_text(f"{VIEWER_ENTRY},{OPERATOR_ENTRY}\n")
    return {
        "DB_PASSWORD_FILE": str(folder / "db"),
        "WEBHOOK_SECRET_FILE": str(folder / "webhook"),
        "API_TOKENS_FILE": str(folder / "tokens"),
        "METRICS_TOKEN_REQUIRED": "true",
    }


@pytest.fixture(scope="module")
def run(stack: Stack) -> str:
    asyncio.run(fresh_pipeline(stack))
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def worker(stack: Stack, run: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    folder = tmp_path_factory.mktemp("security")
    env = app_env(run, **secret_files(stack, folder / "secrets", SECRET))
    with run_worker(stack, folder, METRICS_PORT="free", **env) as worker:
        worker.wait_web()
        yield worker


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def call(worker: Worker, method: str, path: str, token: str | None, body: Any = None) -> int:
    if method == "GET":
        return worker.get(path, headers=bearer(token))[0]
    payload = json.dumps(body).encode()
    return worker.post(path, payload, bearer(token), timeout=120)[0]


ENDPOINTS = [
    ("GET", "/api/v1/payments/stats", None, "viewer"),
    ("GET", "/metrics", None, "viewer"),
    ("POST", "/api/v1/admin/dlq/replay", {"dry_run": True}, "operator"),
    (
        "POST",
        "/api/v1/admin/staging/requeue",
        {"from_id": 1, "to_id": 10, "dry_run": True},
        "operator",
    ),
    ("GET", "/health/live", None, None),
]


def test_the_role_matrix_on_every_endpoint(worker: Worker) -> None:
    callers = {
        "no token": None,
        "unknown token": "pst_" + "x" * 43,
        "viewer": VIEWER,
        "operator": OPERATOR,
    }
    answers = {
        (path, who): call(worker, method, path, token, body)
        for method, path, body, _ in ENDPOINTS
        for who, token in callers.items()
    }
    expected = {}
    for _, path, _, needed in ENDPOINTS:
        for who in callers:
            if needed is None:
                expected[(path, who)] = 200
            elif who in ("no token", "unknown token"):
                expected[(path, who)] = 401
            elif needed == "operator" and who == "viewer":
                expected[(path, who)] = 403
            else:
                expected[(path, who)] = 200
    assert answers == expected


def audit_rows(stack: Stack, after: int) -> list[dict[str, Any]]:
    rows = fetch(
        stack,
        "SELECT id, actor, via, action, parameters, outcome, result, finished_at"
        " FROM payment_service.audit_log WHERE id > $1 ORDER BY id",
        after,
    )
    return [
        {
            **dict(row),
            "parameters": json.loads(row["parameters"]),
            "result": None if row["result"] is None else json.loads(row["result"]),
        }
        for row in rows
    ]


def last_audit_id(stack: Stack) -> int:
    return int(
        fetch(stack, "SELECT coalesce(max(id), 0) AS id FROM payment_service.audit_log")[0]["id"]
    )


def test_each_operator_action_leaves_exactly_one_audit_row(
    stack: Stack, run: str, worker: Worker
) -> None:
    actions: list[tuple[str, str, str, str]] = []  # (via, actor, action, outcome) in order
    start = last_audit_id(stack)
    as_bob = {"AUDIT_ACTOR": "bob@laptop"}

    ok(command(stack, run, "dlq", "replay", "--dry-run", **as_bob))
    actions.append(("cli", "bob@laptop", "dlq.replay", "ok"))
    ok(command(stack, run, "staging", "requeue", "--from-id", "1", "--to-id", "5", **as_bob))
    actions.append(("cli", "bob@laptop", "staging.requeue", "ok"))
    ok(command(stack, run, "partitions", "prune", "--dry-run", **as_bob))
    actions.append(("cli", "bob@laptop", "partitions.prune", "ok"))
    ok(command(stack, run, "partitions", "ensure", **as_bob))
    actions.append(("cli", "bob@laptop", "partitions.ensure", "ok"))
    failed = command(stack, run, "staging", "requeue", "--from-id", "9", "--to-id", "1", **as_bob)
    assert failed.returncode == 1
    actions.append(("cli", "bob@laptop", "staging.requeue", "failed"))
    assert call(worker, "POST", "/api/v1/admin/dlq/replay", OPERATOR, {"reason": "invalid"}) == 200
    actions.append(("http", "alice", "dlq.replay", "ok"))
    body = {"from_id": 1, "to_id": 3, "dry_run": True}
    assert call(worker, "POST", "/api/v1/admin/staging/requeue", OPERATOR, body) == 200
    actions.append(("http", "alice", "staging.requeue", "ok"))
    # Refused calls are not actions: no row.
    assert call(worker, "POST", "/api/v1/admin/dlq/replay", VIEWER, {}) == 403
    assert call(worker, "POST", "/api/v1/admin/staging/requeue", OPERATOR, {"from_id": 0}) == 422

    # (the worker's own secrets row may land among them: its start-up task runs in parallel)
    rows = [row for row in audit_rows(stack, start) if row["action"] != "secrets.changed"]
    assert [(r["via"], r["actor"], r["action"], r["outcome"]) for r in rows] == actions
    assert all(row["finished_at"] is not None for row in rows)
    assert rows[1]["parameters"] == {"from_id": 1, "to_id": 5, "dry_run": False}
    assert rows[5]["parameters"] == {"reason": "invalid", "dry_run": False}
    assert set(rows[5]["result"]) == {"scanned", "matched", "replayed", "skipped"}
    assert "from_id" in rows[4]["result"]["error"] or "9" in rows[4]["result"]["error"]


def test_a_secret_rotation_leaves_one_audit_row_per_change(
    stack: Stack, run: str, worker: Worker, tmp_path: Path
) -> None:
    # The module's worker started with SECRET: the last recorded secrets are those by now.
    start = last_audit_id(stack)
    for attempt, (secret, changes) in enumerate([(ROTATED, 1), (ROTATED, 0), (SECRET, 1)]):
        before = last_audit_id(stack)
        files = secret_files(stack, tmp_path / str(attempt), secret)
        env = app_env(run, WORKER_ID=f"rotation-{attempt}", **files)
        (tmp_path / f"w{attempt}").mkdir()
        with run_worker(stack, tmp_path / f"w{attempt}", **env) as restarted:
            restarted.wait_web()
            # The start-up task writes its row soon after the web server is up.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(audit_rows(stack, before)) < changes:
                time.sleep(0.5)
            time.sleep(2)  # and nothing more comes
        rows = [row for row in audit_rows(stack, before) if row["action"] == "secrets.changed"]
        assert len(rows) == changes, (attempt, rows)
        if changes:
            assert rows[0]["via"] == "worker"
            assert rows[0]["result"] == {"changed": ["webhook_secrets"]}
    shown = json.dumps([row["parameters"] for row in audit_rows(stack, start)])
    for secret in (SECRET, ROTATED):
        assert secret not in shown
        assert secret.removeprefix("whsec_") not in shown


def test_no_secret_shows_in_logs_or_answers(stack: Stack, worker: Worker) -> None:
    answers: list[bytes] = []
    body = json.dumps({"reference_number": "LEAK-1", "amount": "x"}).encode()
    for headers in (
        signed(SECRET, body, msg_id="leak-1"),
        signed(ROTATED, body, msg_id="leak-2"),
        {},
    ):
        answers.append(worker.post(WEBHOOK, body, headers)[2])
    for path in ("/health", "/health/ready", "/health/live", "/api/v1/payments/stats", "/metrics"):
        answers.append(worker.get(path, headers=bearer(VIEWER))[1])
        answers.append(worker.get(path, headers=bearer("pst_wrong"))[1])
    answers.append(worker.post("/api/v1/admin/dlq/replay", b"{", bearer(OPERATOR))[2])
    text = b"\n".join(answers).decode(errors="replace") + worker.log()
    secrets = {
        "webhook secret": SECRET,
        "its base64": SECRET.removeprefix("whsec_"),
        "viewer token": VIEWER,
        "operator token": OPERATOR,
        "db password": stack.db_password,
    }
    leaked = {name: secret for name, secret in secrets.items() if secret in text}
    assert leaked == {}
    assert "LEAK-1" not in worker.log()  # nor the bodies of refused requests


def test_the_metrics_port_asks_for_the_same_token_as_the_main_port(worker: Worker) -> None:
    on_metrics_port = Worker(
        worker.process, f"http://127.0.0.1:{worker.metrics_port}", worker.log_path
    )
    tokens = {"no token": None, "unknown token": "pst_" + "x" * 43, "viewer": VIEWER}
    answers = {
        (port, who): call(served, "GET", "/metrics", token)
        for port, served in (("PORT", worker), ("METRICS_PORT", on_metrics_port))
        for who, token in tokens.items()
    }
    assert answers == {
        (port, who): 200 if who == "viewer" else 401
        for port in ("PORT", "METRICS_PORT")
        for who in tokens
    }
    _, text = on_metrics_port.get("/metrics", headers=bearer(VIEWER))
    assert b"payments_db_pool_size " in text  # measured by the worker, as on PORT
