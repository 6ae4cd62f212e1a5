"""GET /api/v1/payments/stats (app/ops/todays_stats.py): a viewer token."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from faust.web import Request, Response, View

from app.ops.authorization import Caller
from app.ops.todays_stats import todays_stats
from web.access import caller_or_refusal

if TYPE_CHECKING:
    from app.service import PaymentService


class StatsView(View):
    """Today's staging and webhook figures."""

    async def get(self, request: Request) -> Response:
        caller = caller_or_refusal(self, request, "viewer")
        if not isinstance(caller, Caller):
            return caller
        app = cast("PaymentService", self.app)
        return self.json(await todays_stats(app.database.pool))
