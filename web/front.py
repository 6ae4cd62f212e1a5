"""WEBHOOK_PROCESSES: the webhook endpoints in processes of their own, sharing WEBHOOK_PORT.

A Python process uses one core at most, and a worker answering webhooks in its
own event loop spends most of that core on HTTP, Redis and the intake sends,
so its record agent and Kafka consumer wait behind the requests (bench/webhooks:
one worker saturated its core at ~630 req/s while the machine had most of a
core idle). With ``WEBHOOK_PROCESSES=N`` the worker starts N front processes.
Each one serves the same webhook endpoints (web/webhooks.py, unchanged: guards,
signature, replay window, intake send, the wait for the decision) with its own
Redis client, its own idempotent producer and its own decision board, and
listens on WEBHOOK_PORT with SO_REUSEPORT, so the kernel spreads connections
over them. The worker keeps the record agent, the poller and its own web server
on PORT (health, and the webhook endpoints too).

The worker starts the fronts with itself, starts again one that dies, and
stops them (SIGTERM: in-flight requests finish) when it stops; a front whose
worker vanished (SIGKILL) exits by itself within a second. A front holds
nothing durable: a request it answered 2xx has its record in Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web
from mode import Service

from app import collector
from app.intake.guards import Guards
from app.intake.process_pool import exit_with_parent
from app.intake.signatures import Verifier
from app.intake.webhook_counts import WebhookCounts, process_name
from app.kafka.publisher import Publisher
from app.models import DateWindow
from app.ops.log_format import FormattedWorker, log_before_setup
from app.recording.decisions import DecisionBoard, redis_cache_seconds
from app.recording.reference_cache import describe, memory_cache
from app.settings import Settings, load_settings
from app.storage.redis_connection import RedisConnection
from web.webhooks import OPENAPI, answer_webhook

log = logging.getLogger(__name__)

#: How often the worker looks for fronts that exited.
WATCH_SECONDS = 1.0
#: How long a stopping front may take to finish its requests before it is killed.
STOP_SECONDS = 10.0


class Front(Service):
    """One front process: the webhook endpoints on WEBHOOK_PORT, and what they need."""

    def __init__(self, settings: Settings, index: int, **kwargs: Any) -> None:
        self.settings = settings
        self.index = index
        self.redis = RedisConnection(settings)
        self.publisher = Publisher(settings, name=f"front-{index}")
        self.decisions = DecisionBoard(
            self.redis,
            cache_seconds=redis_cache_seconds(settings),
            wait_seconds=settings.webhook_timeout_ms / 1000,
        )
        self.memory = memory_cache(settings)
        self.verifier = Verifier(settings)
        self.guards = Guards(settings, self.redis)
        self.date_window = DateWindow.of(settings)
        self.webhook_counts = WebhookCounts(settings, process_name(f"front-{index}"))
        self._runner: web.AppRunner | None = None
        super().__init__(**kwargs)
        for dependency in (self.redis, self.publisher, self.decisions, self.webhook_counts):
            self.add_dependency(dependency)

    async def on_started(self) -> None:
        application = web.Application()
        application.router.add_post("/api/v1/payments/webhook", self._generic)
        application.router.add_post("/api/v1/payments/webhook/{channel}", self._channel)
        application.router.add_get("/api/v1/openapi.yaml", _openapi)
        runner = web.AppRunner(application, access_log=None, handle_signals=False)
        await runner.setup()
        port = self.settings.webhook_port
        site = web.TCPSite(runner, self.settings.web_bind, port, reuse_port=True)
        await site.start()
        self._runner = runner
        log.info(
            "webhook front %d (pid %d) listening on port %s; memory cache: %s",
            self.index,
            os.getpid(),
            port,
            describe(self.memory),
        )

    async def on_stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()  # stops accepting, lets in-flight requests finish

    async def _generic(self, request: web.Request) -> web.Response:
        return await self._answer(request, None)

    async def _channel(self, request: web.Request) -> web.Response:
        return await self._answer(request, request.match_info["channel"])

    async def _answer(self, request: web.Request, channel: str | None) -> web.Response:
        reply = await answer_webhook(self, request, channel)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/yaml")


def run_front(index: int, worker_pid: int) -> None:
    """A front process's main: settings from the environment, like its worker's."""
    exit_with_parent(worker_pid)
    settings = load_settings()
    log_before_setup(settings.log_format, settings.log_level)
    worker = FormattedWorker(
        Front(settings, index),
        loglevel=settings.log_level.upper(),
        log_format=settings.log_format,
        daemon=True,
        override_logging=True,
    )
    collector.tune()
    worker.execute_from_commandline()


class Fronts(Service):
    """In the worker: starts WEBHOOK_PROCESSES fronts, restarts any that dies, stops them."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")  # the worker has threads
        self._processes: dict[int, BaseProcess] = {}
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        for index in range(self.settings.webhook_processes):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        process = self._context.Process(
            target=run_front, args=(index, os.getpid()), name=f"webhook-front-{index}"
        )
        process.start()
        self._processes[index] = process

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            await self.sleep(WATCH_SECONDS)
            for index, process in list(self._processes.items()):
                if process.exitcode is not None and not self.should_stop:
                    log.error(
                        "webhook front %d (pid %s) exited with code %s; starting it again",
                        index,
                        process.pid,
                        process.exitcode,
                    )
                    self._spawn(index)

    async def on_stop(self) -> None:
        processes, self._processes = list(self._processes.values()), {}
        for process in processes:
            process.terminate()
        loop = asyncio.get_running_loop()
        for process in processes:
            await loop.run_in_executor(None, process.join, STOP_SECONDS)
            if process.exitcode is None:
                log.error("webhook front pid %s did not stop; killing it", process.pid)
                process.kill()
