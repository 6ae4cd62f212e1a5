"""Operator commands run through the Faust CLI: ``python -m app <command>``."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import asyncpg
from faust.cli import AppCommand

from app.database import connect_options
from app.migrations import migrate as apply_migrations

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
