"""GET /api/v1/payments/stats (app/ops/todays_stats.py): a viewer token."""

from __future__ import annotations

from typing import Any

from faust.web import Request, Response, View

from app.ops.authorization import Caller
from app.ops.todays_stats import todays_stats
from app.settings import Settings
from app.storage.database import Database
from web.access import caller_or_refusal
from web.binding import bound


class StatsView(View):
    """Today's staging and webhook figures."""

    settings: Settings
    database: Database

    async def get(self, request: Request) -> Response:
        caller = caller_or_refusal(self, self.settings, request, "viewer")
        if not isinstance(caller, Caller):
            return caller
        return self.json(await todays_stats(self.database.pool))


def register(app: Any, *, settings: Settings, database: Database) -> None:
    """Route /api/v1/payments/stats."""
    app.page("/api/v1/payments/stats")(bound(StatsView, settings=settings, database=database))
