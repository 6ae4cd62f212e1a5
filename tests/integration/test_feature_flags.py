"""The rollout's switches on the real stack: STAGING_ENABLED=false, WEBHOOKS_ENABLED=false.

One worker with both off and one webhook front: a staged row stays unclaimed, every
webhook (the worker's and the front's) is a 503 with Retry-After and records nothing,
/health and the start-up log say so.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from tests.pipeline import app_env, fetch, fresh_pipeline, stage, topic_size
from tests.stack import Stack, Worker, free_port, run_worker, wait_for
from tests.webhook_client import signed

SECRET = "whsec_" + "ZmVhdHVyZSBmbGFncyB0ZXN0IHNpZ25pbmcgc2VjcmV0"
WEBHOOK = "/api/v1/payments/webhook"
LISTENING = re.compile(r"webhook front 0 \(pid \d+\) listening")


def notice(reference: str) -> tuple[bytes, dict[str, str]]:
    body = {
        "reference_number": reference,
        "loan_account_number": "LN0001234",
        "cif": "C000987",
        "amount": 12.5,
        "payment_date": datetime.now(UTC).date().isoformat(),
    }
    raw = json.dumps(body).encode()
    return raw, signed(SECRET, raw, msg_id=f"{reference}-id")


def rows(stack: Stack, query: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in fetch(stack, query)]


def test_switched_off_staging_and_webhooks_record_nothing(stack: Stack, tmp_path: Path) -> None:
    asyncio.run(fresh_pipeline(stack))
    run = uuid.uuid4().hex[:8]
    reference = f"FLAG-{run}-STAGED"
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    row = (reference, "LA000001", "CIF000001", Decimal("10.00"), now, "cash", "{}")
    asyncio.run(stage(stack, [row]))
    front_port = free_port()
    env = app_env(
        run,
        WEBHOOK_SECRET=SECRET,
        WEBHOOK_PROCESSES="1",
        WEBHOOK_PORT=str(front_port),
        STAGING_ENABLED="false",
        WEBHOOKS_ENABLED="false",
    )
    with run_worker(stack, tmp_path, **env) as worker:
        front = Worker(worker.process, f"http://127.0.0.1:{front_port}", worker.log_path)

        def ready() -> bool:
            worker.assert_alive()
            try:
                return worker.get("/health/ready", timeout=5)[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout=120, what="/health/ready (partitions assigned, timers running)")
        wait_for(lambda: LISTENING.search(worker.log()), timeout=60, what="the webhook front")
        # STAGING_INTERVAL_SECONDS=1 (app_env): a running poller would have taken it by now.
        time.sleep(5)

        answers = [
            served.post(WEBHOOK, *notice(f"FLAG-{run}-{name}"))
            for name, served in (("WORKER", worker), ("FRONT", front))
        ]
        _, health = worker.get("/health")
        checks = json.loads(health)["checks"]
        messages = worker.log_messages()

    assert rows(stack, "SELECT processed FROM public.payment_staging") == [(False,)]
    assert rows(stack, "SELECT count(*) FROM payment_service.staging_process_log") == [(0,)]
    for status, headers, body in answers:
        assert (status, json.loads(body)["error"]) == (503, "disabled")
        assert headers["Retry-After"] == "5"
    assert rows(stack, "SELECT count(*) FROM payment_service.payment_references") == [(0,)]
    assert asyncio.run(topic_size(stack, "payment.intake")) == 0
    assert (checks["staging"], checks["webhooks"]) == ("disabled", "disabled")
    assert "feature flags: STAGING_ENABLED=false WEBHOOKS_ENABLED=false" in messages
