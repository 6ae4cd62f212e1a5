"""schemathesis against docs/openapi.yaml, every request signed: no 5xx, answers as documented."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.pipeline import app_env
from tests.stack import Stack, Worker, run_worker
from tests.webhook_client import signed

SECRET = "whsec_" + "c2NoZW1hdGhlc2lzIHNpZ25zIGV2ZXJ5IHJlcXVlc3Q="
SCHEMA = schemathesis.openapi.from_path(Path(__file__).parents[2] / "docs" / "openapi.yaml")


class SignEveryRequest(requests.auth.AuthBase):
    """Sign the body requests is about to send, as a real sender would."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        with contextlib.suppress(UnicodeDecodeError):  # not text: left unsigned, so a 401
            request.headers.update(signed(SECRET, raw, msg_id=uuid.uuid4().hex))
        return request


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Any:
    env = app_env(f"api-{uuid.uuid4().hex[:8]}", WEBHOOK_SECRET=SECRET, WEBHOOK_TIMEOUT_MS="2000")
    with run_worker(stack, tmp_path_factory.mktemp("api"), **env) as worker:
        worker.wait_web()
        session = requests.Session()
        session.auth = SignEveryRequest()
        yield worker, session


@SCHEMA.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_generated_request_gets_a_server_error(case: Any, api: tuple[Worker, Any]) -> None:
    worker, session = api
    case.call_and_validate(
        base_url=worker.base_url,
        session=session,
        checks=[not_a_server_error, response_schema_conformance],
        timeout=10,
    )


def test_the_signing_session_is_accepted(api: tuple[Worker, Any]) -> None:
    """The generated requests above are signed well enough to reach the body checks."""
    worker, session = api
    reference = f"API-{uuid.uuid4().hex[:10]}"
    body = {
        "reference_number": reference,
        "loan_account_number": "LN1",
        "cif": "C1",
        "amount": 10.5,
        "payment_date": "2026-11-27",
    }
    response = session.post(worker.base_url + "/api/v1/payments/webhook", json=body, timeout=10)
    assert response.status_code in (201, 202), response.text
    assert (
        session.post(
            worker.base_url + "/api/v1/payments/webhook", json=body | {"cif": ""}, timeout=10
        ).status_code
        == 422
    )
