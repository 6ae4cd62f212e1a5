"""Operator actions over HTTP (an operator token), each leaving one audit row.

- ``POST /api/v1/admin/dlq/replay`` ``{"reason": "invalid"?, "dry_run": false}``:
  the dead letters' records back to the intake (app/ops/dlq.py; the dedup makes a
  replay safe to repeat).
- ``POST /api/v1/admin/staging/requeue`` ``{"from_id": 1, "to_id": 500, "dry_run": false}``:
  processed staging rows back to the poller (app/ops/staging_admin.py).

Both answer when the action is done, with its counts and the audit row's id.
The command line does the same (``python -m app dlq replay``, ``staging requeue``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from faust.web import Request, Response, View
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from app.exceptions import PaymentsError
from app.models import DeadLetterReason, field_errors
from app.ops import dlq as dead_letters
from app.ops import staging_admin
from app.ops.authorization import Caller
from app.ops.operator_audit import audited
from app.settings import Settings
from web.access import caller_or_refusal
from web.binding import bound

log = logging.getLogger(__name__)

#: The largest staging id Postgres' bigint holds: past it asyncpg would raise, not refuse.
BIGINT_MAX = 2**63 - 1


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: DeadLetterReason | None = None
    dry_run: StrictBool = False


class RequeueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_id: int = Field(ge=1, le=BIGINT_MAX)
    to_id: int = Field(ge=1, le=BIGINT_MAX)
    dry_run: StrictBool = False


async def _body(
    request: Request, model: type[BaseModel], seconds: float
) -> BaseModel | dict[str, Any]:
    """The request's JSON as ``model``, or the 4xx body saying what is wrong.

    A body not whole within ``seconds`` (WEBHOOK_BODY_TIMEOUT_SECONDS) is a 408, as for webhooks.
    """
    try:
        async with asyncio.timeout(seconds):
            raw = await request.read()
    except TimeoutError:
        message = f"the body did not arrive within {seconds:g} s; send it whole, then retry"
        return {"error": "request_timeout", "message": message}
    try:
        return model.model_validate(json.loads(raw or b"{}"))
    except ValidationError as exc:  # a ValueError too: caught first
        errors = [error.model_dump() for error in field_errors(exc)]
        return {"error": "invalid_request", "message": "the body breaks a rule", "errors": errors}
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError, a body that is not UTF-8, an integer past Python's digit
        # limit (all ValueError), or arrays nested deeper than the parser recurses.
        return {"error": "invalid_json", "message": f"the body is not valid JSON: {exc}"}


class OperatorAction(View):
    """An audited operator action: a token with the operator role, a JSON body, one audit row."""

    action: str
    body_model: type[BaseModel]
    settings: Settings

    async def run(self, settings: Settings, asked: Any) -> dict[str, Any]:
        """Do the action; its counts go to the audit row and the answer."""
        raise NotImplementedError

    async def post(self, request: Request) -> Response:
        settings = self.settings
        caller = caller_or_refusal(self, settings, request, "operator")
        if not isinstance(caller, Caller):
            return caller
        asked = await _body(request, self.body_model, settings.webhook_body_timeout_seconds)
        if not isinstance(asked, self.body_model):
            assert isinstance(asked, dict)
            status = 422 if "errors" in asked else 400
            return self.json(asked, status=408 if asked["error"] == "request_timeout" else status)
        parameters = asked.model_dump()
        try:
            async with audited(
                settings, actor=caller.name, via="http", action=self.action, parameters=parameters
            ) as entry:
                entry.result = await self.run(settings, asked)
        except PaymentsError as exc:
            return self.json({"error": "failed", "message": str(exc)}, status=_status(exc))
        return self.json({**entry.result, "dry_run": parameters["dry_run"], "audit_id": entry.id})


class DlqReplayView(OperatorAction):
    action = "dlq.replay"
    body_model = ReplayRequest

    async def run(self, settings: Settings, asked: ReplayRequest) -> dict[str, Any]:
        reason = dead_letters.check_reason(asked.reason)
        report = await dead_letters.replay(
            settings, reason=reason, dry_run=asked.dry_run, say=log.debug, note=log.info
        )
        return report.as_dict()


class StagingRequeueView(OperatorAction):
    action = "staging.requeue"
    body_model = RequeueRequest

    async def run(self, settings: Settings, asked: RequeueRequest) -> dict[str, Any]:
        report = await staging_admin.requeue(
            settings, first=asked.from_id, last=asked.to_id, dry_run=asked.dry_run, say=log.info
        )
        return {"rows": report.rows, "chunks": report.chunks}


def _status(exc: PaymentsError) -> int:
    """422 for a request the action refuses; 503 when a dependency is away."""
    return 503 if exc.retriable else 422


def register(app: Any, *, settings: Settings) -> None:
    """Route the operator actions."""
    app.page("/api/v1/admin/dlq/replay")(bound(DlqReplayView, settings=settings))
    app.page("/api/v1/admin/staging/requeue")(bound(StagingRequeueView, settings=settings))
