"""Operator commands run through the Faust CLI: ``python -m app <command>``.

Each is a thin wrapper: the work lives in a module named after what it owns
(``app.ops.dlq``, ``app.ops.staging_admin``, ``app.ops.lookup``…). Errors the service raises
on purpose are printed as one line saying what to do, with exit code 1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

import click
from faust.cli import AppCommand, argument, option
from mode import ServiceT, Worker

from app.exceptions import CommandError, PaymentsError
from app.months import retention_cutoff
from app.ops import dlq as dead_letters
from app.ops import staging_admin
from app.ops.authorization import new_token
from app.ops.log_format import FormattedWorker
from app.ops.lookup import lookup_reference
from app.ops.operator_audit import AuditEntry, audited, command_line_actor
from app.ops.reconcile import reconcile as check_invariants
from app.settings import ROLES, TOKEN_NAME, Settings
from app.storage import database
from app.storage import partitions as partition_jobs
from app.storage.migrations import migrate as apply_migrations

if TYPE_CHECKING:
    from tables.references import References


class Operated(Protocol):
    """What the commands use of the app they run in (app/service.py builds it)."""

    settings: Settings
    references: References


@contextmanager
def _operator_errors(command: AppCommand) -> Iterator[None]:
    """Our errors (and a missing topic) as one line on stderr and exit code 1."""
    try:
        yield
    except (PaymentsError, LookupError) as exc:
        command.say(f"error: {exc}", file=command.stderr)
        raise SystemExit(1) from None


def _audited(
    app: Operated, action: str, parameters: dict[str, Any]
) -> AbstractAsyncContextManager[AuditEntry]:
    """An operator's action on the command line, as one audit row (app/ops/operator_audit.py)."""
    return audited(
        app.settings, actor=command_line_actor(), via="cli", action=action, parameters=parameters
    )


def _note(command: AppCommand) -> dead_letters.Say:
    """Progress lines go to stderr, so stdout stays the answer."""
    return lambda message: command.say(message, file=command.stderr)


class Command(AppCommand):
    """Faust's app command, logging in LOG_FORMAT like the worker (stdout stays its output)."""

    @property
    def _Worker(self) -> type[Worker]:
        return FormattedWorker

    def worker_for_service(
        self, service: ServiceT, loop: asyncio.AbstractEventLoop | None = None
    ) -> Worker:
        worker = super().worker_for_service(service, loop)
        cast(FormattedWorker, worker).log_format = cast(Operated, self.app).settings.log_format
        return worker


async def migrate(self: AppCommand) -> None:
    """Apply pending database migrations (idempotent; safe while workers run)."""
    app = cast(Operated, self.app)
    # database.connect says what to check (the host, or the CA setting for a rejected certificate).
    with _operator_errors(self):
        connection = await database.connect(app.settings)
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
    app = cast(Operated, self.app)
    with _operator_errors(self):
        report = await check_invariants(app.settings, progress=self.say)
    figures = report.as_dict()
    width = max(len(name) for name in figures)
    for name, value in figures.items():
        self.say(f"{name:<{width}}  {value}")
    self.say(json.dumps(figures))
    if not report.ok:
        raise SystemExit(1)


PARTITIONS_OPTIONS = (
    argument("action", type=click.Choice(["list", "ensure", "prune"])),
    option(
        "--dry-run", is_flag=True, default=False, help="prune: say what would go, change nothing"
    ),
)


async def partitions(self: AppCommand, action: str, dry_run: bool) -> None:
    """Monthly partitions of payments: `partitions list|ensure|prune [--dry-run]`."""
    app = cast(Operated, self.app)
    settings = app.settings
    today = datetime.now(UTC).date()
    with _operator_errors(self):
        if dry_run and action != "prune":
            raise CommandError("--dry-run is for `partitions prune`")
        connection = await database.connect(settings)
        try:
            if action == "ensure":
                async with _audited(app, "partitions.ensure", {}) as entry:
                    created = await partition_jobs.ensure(connection, today)
                    entry.result = {"created": created}
                self.say(f"created {', '.join(created)}" if created else "every partition exists")
            elif action == "prune":
                months = settings.partition_retention_months
                parameters = {"retention_months": months, "dry_run": dry_run}
                async with _audited(app, "partitions.prune", parameters) as entry:
                    run = await partition_jobs.prune(
                        connection, today, months, dry_run=dry_run, progress=_note(self)
                    )
                    entry.result = {
                        "partitions": [partition.name for partition in run.dropped],
                        "kept": [held.partition.name for held in run.held],
                    }
                cutoff = retention_cutoff(today, months)
                verb = "would drop" if dry_run else "dropped"
                self.say(
                    f"{verb} {len(run.dropped)} partitions before {cutoff} "
                    f"(PARTITION_RETENTION_MONTHS={months})"
                )
                for partition in run.dropped:
                    self.say(
                        f"  {partition.name}  ~{partition.rows_estimate} rows  "
                        f"{partition.bytes} bytes"
                    )
                if run.held:
                    verb = "would keep" if dry_run else "kept"
                    self.say(f"{verb} {len(run.held)} expired partitions that hold young rows:")
                for held in run.held:
                    self.say(f"  {held.warning(months)}")
            found = await partition_jobs.list_partitions(connection)
        finally:
            await connection.close()
    if action == "list":
        self.say(f"{'partition':<18} {'rows (estimate)':>16} {'bytes':>14}")
        for partition in found:
            self.say(f"{partition.name:<18} {partition.rows_estimate:>16} {partition.bytes:>14}")


DLQ_OPTIONS = (
    argument("action", type=click.Choice(["list", "replay"])),
    option("--reason", default=None, help="only dead letters with this reason code"),
    option("--limit", type=int, default=None, help="list: print at most N records"),
    option("--dry-run", is_flag=True, default=False, help="replay: print, send nothing"),
)


async def dlq(
    self: AppCommand, action: str, reason: str | None, limit: int | None, dry_run: bool
) -> None:
    """The dead-letter topic: `dlq list [--reason R] [--limit N]`, `dlq replay [--dry-run]`."""
    app = cast(Operated, self.app)
    with _operator_errors(self):
        reason = dead_letters.check_reason(reason)
        if action == "list":
            if dry_run:
                raise CommandError("--dry-run is for `dlq replay`; `dlq list` sends nothing")
            if limit is not None and limit < 0:
                raise CommandError(f"--limit {limit}: give a number of records, 0 or more")
            counts = await dead_letters.list_letters(
                app.settings, reason=reason, limit=limit, say=self.say, note=_note(self)
            )
            self.say("dead letters by reason:")
            for line in dead_letters.summary(counts):
                self.say(line)
            return
        if limit is not None:
            raise CommandError("--limit is for `dlq list`; a replay reads every dead letter")
        parameters = {"reason": reason, "dry_run": dry_run}
        async with _audited(app, "dlq.replay", parameters) as entry:
            report = await dead_letters.replay(
                app.settings, reason=reason, dry_run=dry_run, say=self.say, note=_note(self)
            )
            entry.result = report.as_dict()
        for line in report.lines(dry_run):
            self.say(line)


STAGING_OPTIONS = (
    argument("action", type=click.Choice(["status", "requeue"])),
    option("--runs", type=int, default=10, help="status: how many recent runs to show"),
    option("--from-id", "from_id", type=int, default=None, help="requeue: first staging id"),
    option("--to-id", "to_id", type=int, default=None, help="requeue: last staging id"),
    option("--dry-run", is_flag=True, default=False, help="requeue: count, change nothing"),
)


async def staging(
    self: AppCommand,
    action: str,
    runs: int,
    from_id: int | None,
    to_id: int | None,
    dry_run: bool,
) -> None:
    """The staging table: `staging status`, `staging requeue --from-id A --to-id B`."""
    app = cast(Operated, self.app)
    with _operator_errors(self):
        if action == "status":
            if from_id is not None or to_id is not None or dry_run:
                raise CommandError("--from-id, --to-id and --dry-run are for `staging requeue`")
            await staging_admin.status(app.settings, runs=max(runs, 0), say=self.say)
            return
        if from_id is None or to_id is None:
            raise CommandError("`staging requeue` needs --from-id and --to-id (inclusive)")
        parameters = {"from_id": from_id, "to_id": to_id, "dry_run": dry_run}
        async with _audited(app, "staging.requeue", parameters) as entry:
            report = await staging_admin.requeue(
                app.settings, first=from_id, last=to_id, dry_run=dry_run, say=self.say
            )
            entry.result = {"rows": report.rows, "chunks": report.chunks}
        if dry_run:
            self.say(f"would requeue {report.rows} processed rows with ids {from_id}-{to_id}")
        else:
            self.say(
                f"requeued {report.rows} processed rows with ids {from_id}-{to_id}: "
                "the poller takes them again (recorded ones end as duplicates)"
            )


REFERENCES_OPTIONS = (
    argument("action", type=click.Choice(["lookup"])),
    argument("reference"),
)


async def references(self: AppCommand, action: str, reference: str) -> None:
    """Where a reference is: `references lookup REF` (Postgres, Redis, changelog, events)."""
    app = cast(Operated, self.app)
    with _operator_errors(self):
        found = await lookup_reference(
            app.settings,
            reference,
            changelog_topic=app.references.table.changelog_topic.get_topic_name(),
            note=_note(self),
        )
        for line in found.lines():
            self.say(line)
        if found.failures:
            raise CommandError(f"{len(found.failures)} place(s) could not be asked (FAILED above)")


TOKENS_OPTIONS = (
    argument("action", type=click.Choice(["new"])),
    argument("name"),
    argument("role", type=click.Choice(list(ROLES))),
)


async def tokens(self: AppCommand, action: str, name: str, role: str) -> None:
    """API tokens: `tokens new NAME ROLE` prints a token and its API_TOKENS entry."""
    with _operator_errors(self):
        if not TOKEN_NAME.fullmatch(name):
            raise CommandError(f"{name!r}: a name is letters, digits and _ . @ - (64 at most)")
        token, entry = new_token(name, role)  # type: ignore[arg-type]  # click checked it
        self.say(f"token (give it to {name}; it is shown once and not stored): {token}")
        self.say(f"API_TOKENS entry (add it, comma-separated, and restart the workers): {entry}")
