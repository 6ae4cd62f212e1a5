"""GET /health: the plan's shape, 200 when every dependency answers, 503 otherwise."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from faust.web import Request, Response, View

if TYPE_CHECKING:
    from app.service import PaymentService


class HealthView(View):
    """Reports database, kafka and redis as ok/error, the staging backlog and last run."""

    async def get(self, request: Request) -> Response:
        app = cast("PaymentService", self.app)
        report = await app.health.report()
        status = 200 if report.status == "healthy" else 503
        return self.json(report.model_dump(mode="json"), status=status)
