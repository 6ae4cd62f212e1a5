"""Operator commands run through the Faust CLI: ``python -m app <command>``."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, cast

import asyncpg
from faust.cli import AppCommand
from mode import ServiceT, Worker

from app.database import connect_options
from app.log_format import FormattedWorker
from app.migrations import migrate as apply_migrations
from app.reconcile import reconcile as check_invariants

if TYPE_CHECKING:
    from app.service import PaymentService


class Command(AppCommand):
    """Faust's app command, logging in LOG_FORMAT like the worker (stdout stays its output)."""

    @property
    def _Worker(self) -> type[Worker]:
        return FormattedWorker

    def worker_for_service(
        self, service: ServiceT, loop: asyncio.AbstractEventLoop | None = None
    ) -> Worker:
        worker = super().worker_for_service(service, loop)
        cast(FormattedWorker, worker).log_format = cast(
            "PaymentService", self.app
        ).settings.log_format
        return worker


async def migrate(self: AppCommand) -> None:
    """Apply pending database migrations (idempotent; safe while workers run)."""
    app = cast("PaymentService", self.app)
    connection = await asyncpg.connect(**connect_options(app.settings))
    try:
        applied = await apply_migrations(connection)
    finally:
        await connection.close()
    if applied:
        for migration in applied:
            self.say(f"applied {migration.version}_{migration.name}")
    else:
        self.say("database is up to date")


async def reconcile(self: AppCommand) -> None:
    """Check the invariants between Postgres and payment.events; exit 0 only if they hold."""
    app = cast("PaymentService", self.app)
    report = await check_invariants(app.settings, progress=self.say)
    figures = report.as_dict()
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        self.say(f"{name:<{width}}  {value}")
    self.say(json.dumps(figures))
    if not report.ok:
        raise SystemExit(1)
