"""GET /api/v1/payments/stats (app/stats.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from faust.web import Request, Response, View

from app.stats import todays_stats

if TYPE_CHECKING:
    from app.service import PaymentService


class StatsView(View):
    """Today's staging and webhook figures."""

    async def get(self, request: Request) -> Response:
        app = cast("PaymentService", self.app)
        return self.json(await todays_stats(app.database.pool))
