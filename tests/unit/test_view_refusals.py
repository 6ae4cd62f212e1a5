"""What a client controls gets a 4xx from the views that are not webhooks, never a 500.

aiohttp decodes header bytes that are not UTF-8 with ``surrogateescape``: the views
see lone surrogates, which is what these requests carry.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiohttp import web
from faust.web import Request, View

from app.ops.authorization import Refusal, authorize, new_token
from app.settings import Settings
from web.admin import DlqReplayView, StagingRequeueView
from web.binding import bound
from web.metrics import MetricsView
from web.stats import StatsView

VIEWER, VIEWER_ENTRY = new_token("grafana", "viewer")
OPERATOR, OPERATOR_ENTRY = new_token("alice", "operator")
SETTINGS = Settings(api_tokens=f"{VIEWER_ENTRY},{OPERATOR_ENTRY}", metrics_token_required=True)

#: ``Bearer `` and bytes 0xff 0xfe, as aiohttp hands them over.
NOT_UTF8 = b"Bearer \xff\xfe".decode("utf-8", "surrogateescape")


class JsonWeb:
    """The one thing these views ask of Faust's web driver: a JSON response."""

    def json(self, value: Any, *, status: int = 200, **kwargs: Any) -> web.Response:
        return web.json_response(value, status=status, headers=kwargs.get("headers"))


def view(cls: type[View], **collaborators: Any) -> Any:
    return bound(cls, **collaborators)(cast(Any, None), cast(Any, JsonWeb()))


@dataclass
class FakeRequest:
    """What these views read of aiohttp's request: headers, the peer and the body."""

    headers: dict[str, str]
    body: bytes
    remote: str = "127.0.0.1"

    async def read(self) -> bytes:
        return self.body


def request(authorization: str, body: bytes = b"") -> Request:
    return cast(Request, FakeRequest({"Authorization": authorization}, body))


@pytest.mark.parametrize(
    "header",
    [NOT_UTF8, b"\xff\xfe \xfd".decode("utf-8", "surrogateescape"), "Bearer caf\u00e9"],
)
def test_a_token_that_is_not_utf8_is_unauthorized(header: str) -> None:
    found = authorize(SETTINGS, header, "viewer")
    assert isinstance(found, Refusal)
    assert found.status == 401


async def test_stats_answer_401_to_a_header_that_is_not_utf8() -> None:
    answer = await view(StatsView, settings=SETTINGS, database=None).get(request(NOT_UTF8))
    assert answer.status == 401


async def test_token_protected_metrics_answer_401_to_a_header_that_is_not_utf8() -> None:
    answer = await view(MetricsView, settings=SETTINGS, database=None, measured=None).get(
        request(NOT_UTF8)
    )
    assert answer.status == 401


@pytest.mark.parametrize("cls", [DlqReplayView, StagingRequeueView])
async def test_admin_endpoints_answer_401_to_a_header_that_is_not_utf8(cls: type[View]) -> None:
    answer = await view(cls, settings=SETTINGS).post(request(NOT_UTF8, b"{}"))
    assert answer.status == 401


@pytest.mark.parametrize(
    ("cls", "body", "status", "field"),
    [
        (DlqReplayView, b'{"dry_run": true, "reason": "\xff"}', 400, None),  # not UTF-8
        (DlqReplayView, b"[" * 100_000 + b"]" * 100_000, 400, None),  # nested past recursion
        (StagingRequeueView, b'{"from_id": 1' + b"0" * 5000 + b', "to_id": 2}', 400, None),
        (StagingRequeueView, b'{"from_id": 1, "to_id": 9223372036854775808}', 422, "to_id"),
        (StagingRequeueView, b'{"from_id": "one", "to_id": 2}', 422, "from_id"),
        (DlqReplayView, b"[]", 422, None),
        (DlqReplayView, b'{"dry_run": "yes"}', 422, "dry_run"),
        (DlqReplayView, b'{"reason": "nope", "dry_run": true}', 422, "reason"),
    ],
)
async def test_a_malformed_admin_body_is_a_4xx_naming_the_field(
    cls: type[View], body: bytes, status: int, field: str | None
) -> None:
    answer = await view(cls, settings=SETTINGS).post(request(f"Bearer {OPERATOR}", body))
    assert answer.status == status
    if field is not None:
        found = json.loads(cast(web.Response, answer).text)
        assert field in [error["field"] for error in found["errors"]]


@dataclass
class TricklingRequest(FakeRequest):
    """A body that never finishes arriving."""

    async def read(self) -> bytes:
        await asyncio.sleep(60)
        return self.body


@pytest.mark.parametrize("cls", [DlqReplayView, StagingRequeueView])
async def test_an_admin_body_that_does_not_arrive_in_time_is_408(cls: type[View]) -> None:
    settings = Settings(api_tokens=OPERATOR_ENTRY, webhook_body_timeout_seconds=0.05)
    slow = TricklingRequest({"Authorization": f"Bearer {OPERATOR}"}, b"{}")
    answer = await view(cls, settings=settings).post(cast(Request, slow))
    assert answer.status == 408
    assert json.loads(answer.body)["error"] == "request_timeout"
