"""Operator commands run through the Faust CLI: ``python -m app <command>``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, cast

import asyncpg
from faust.cli import AppCommand

from app.database import connect_options
from app.migrations import migrate as apply_migrations
from app.reconcile import reconcile as check_invariants

if TYPE_CHECKING:
    from app.service import PaymentService


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
