"""Bearer-token checks for the views that are not webhooks (app/ops/authorization.py)."""

from __future__ import annotations

from faust.web import Request, Response, View

from app.ops.authorization import Caller, Refusal, Role, authorize
from app.settings import Settings


def caller_or_refusal(
    view: View, settings: Settings, request: Request, needed: Role
) -> Caller | Response:
    """The request's caller when its token has ``needed``, else the 401/403 answer to send."""
    found = authorize(settings, request.headers.get("Authorization"), needed)
    if isinstance(found, Refusal):
        return view.json(found.body(), status=found.status, headers=found.headers())
    return found
