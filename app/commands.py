"""Operator commands run through the Faust CLI: ``python -m app <command>``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import asyncpg
from faust.cli import AppCommand

from app import partitions as partition_jobs
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


async def partitions(self: AppCommand, action: str, dry_run: bool) -> None:
    """Monthly partitions of payments: list (with sizes), ensure (3 months ahead), prune."""
    app = cast("PaymentService", self.app)
    settings = app.settings
    today = datetime.now(UTC).date()
    connection = await asyncpg.connect(**connect_options(settings))
    try:
        if action == "ensure":
            created = await partition_jobs.ensure(connection, today)
            self.say(f"created {', '.join(created)}" if created else "every partition exists")
        elif action == "prune":
            cutoff = partition_jobs.retention_cutoff(today, settings.partition_retention_months)
            doomed = await partition_jobs.prune(
                connection,
                today,
                settings.partition_retention_months,
                dry_run=dry_run,
                progress=self.say,
            )
            verb = "would drop" if dry_run else "dropped"
            self.say(
                f"{verb} {len(doomed)} partitions before {cutoff} "
                f"(PARTITION_RETENTION_MONTHS={settings.partition_retention_months})"
                + "".join(f"\n  {p.name}  ~{p.rows_estimate} rows  {p.bytes} bytes" for p in doomed)
            )
        found = await partition_jobs.list_partitions(connection)
    finally:
        await connection.close()
    if action == "list":
        self.say(f"{'partition':<18} {'rows (estimate)':>16} {'bytes':>14}")
        for partition in found:
            self.say(f"{partition.name:<18} {partition.rows_estimate:>16} {partition.bytes:>14}")
