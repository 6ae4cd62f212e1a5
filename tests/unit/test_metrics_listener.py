"""METRICS_PORT: /metrics on a listener of its own, refusing what the one on PORT refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest

from app.ops.authorization import new_token
from app.settings import Settings
from app.storage.database import Database
from tests.stack import free_port
from web.metrics import MetricsListener, MetricsPortTaken, measured_gauges

VIEWER, VIEWER_ENTRY = new_token("prometheus", "viewer")


async def listening(settings: Settings) -> AsyncIterator[str]:
    listener = MetricsListener(
        cast(Any, None), settings, cast(Database, None), measured_gauges(settings)
    )
    await listener.start()
    try:
        yield f"http://127.0.0.1:{settings.metrics_port}/metrics"
    finally:
        await listener.stop()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("options", "status", "error"),
    [
        ({"enable_metrics": False}, 404, "not_found"),
        ({"metrics_allowlist": "10.0.0.0/8"}, 403, "forbidden"),
        ({"metrics_token_required": True, "api_tokens": VIEWER_ENTRY}, 401, "unauthorized"),
    ],
)
async def test_the_metrics_port_refuses_like_the_main_port(
    options: dict[str, Any], status: int, error: str
) -> None:
    settings = Settings(web_bind="127.0.0.1", metrics_port=free_port(), **options)
    async for url in listening(settings):
        answered, body = await get(url)
        assert (answered, body["error"]) == (status, error)


async def test_a_taken_metrics_port_stops_the_start_with_what_to_do() -> None:
    settings = Settings(web_bind="127.0.0.1", metrics_port=free_port())
    async for _ in listening(settings):
        second = MetricsListener(
            cast(Any, None), settings, cast(Database, None), measured_gauges(settings)
        )
        with pytest.raises(MetricsPortTaken, match="set METRICS_PORT to a free port"):
            await second.start()
