"""GET /health/startup (web/health.py): 503 until the cache is warmed and the tables recovered."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any, cast

from aiohttp import web
from faust.web import Request

from web.binding import bound
from web.health import StartupView


class JsonWeb:
    def json(self, value: Any, *, status: int = 200, **kwargs: Any) -> web.Response:
        return web.json_response(value, status=status)


async def ask(view: Any) -> tuple[int, Any]:
    response = await view.get(cast(Request, None))
    return response.status, json.loads(response.body)


async def test_the_probe_passes_once_warming_and_table_recovery_are_both_done() -> None:
    recovered = asyncio.Event()
    app = SimpleNamespace(tables=SimpleNamespace(recovery=SimpleNamespace(completed=recovered)))
    warming = SimpleNamespace(done=asyncio.Event())
    view = bound(StartupView, warming=warming)(cast(Any, app), cast(Any, JsonWeb()))

    first = await ask(view)
    recovered.set()
    second = await ask(view)
    warming.done.set()
    third = await ask(view)

    assert first == (
        503,
        {"status": "starting", "checks": {"cache": "warming", "tables": "recovering"}},
    )
    assert second == (
        503,
        {"status": "starting", "checks": {"cache": "warming", "tables": "recovered"}},
    )
    assert third == (
        200,
        {"status": "started", "checks": {"cache": "warmed", "tables": "recovered"}},
    )
