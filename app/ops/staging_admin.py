"""The staging table from the command line: its backlog and runs, and requeuing rows.

Requeuing marks processed rows unprocessed again so the poller takes them once
more. That is safe because recording is idempotent: a requeued row whose
reference is recorded is a duplicate (the poller's bulk check drops it, or the
record agent decides it), never a second payment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.exceptions import CommandError
from app.settings import Settings
from app.storage import staging_table
from app.storage.database import connect

Say = Callable[[str], None]

#: Ids per UPDATE: each chunk is its own short transaction, so the poller keeps going.
REQUEUE_CHUNK = 10_000


def id_chunks(first: int, last: int, size: int = REQUEUE_CHUNK) -> Iterator[tuple[int, int]]:
    """Inclusive (from, to) id ranges of at most ``size`` ids covering ``first``..``last``."""
    if size < 1:
        raise ValueError("size must be at least 1")
    start = first
    while start <= last:
        end = min(start + size - 1, last)
        yield start, end
        start = end + 1


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(sep=" ", timespec="seconds")


def describe_run(run: Any) -> str:
    """One line for a ``staging_process_log`` row."""
    seconds = ""
    if run["completed_at"] is not None and run["started_at"] is not None:
        seconds = f" in {(run['completed_at'] - run['started_at']).total_seconds():.2f} s"
    return (
        f"{_when(run['started_at'])}  {run['status']:<9}  ids {run['batch_start_id']}-"
        f"{run['batch_end_id']}: {run['total_records']} rows, {run['processed_records']} "
        f"published, {run['duplicate_records']} duplicates, {run['error_records']} invalid"
        f"{seconds}"
    )


def failure_text(details: str | None) -> str:
    """What a failed run's error_details say, in one line."""
    if not details:
        return "(no details)"
    try:
        value = json.loads(details)
    except ValueError:
        return details
    if isinstance(value, dict) and "error" in value:
        attempts = value.get("attempts")
        suffix = f" (after {attempts} attempts)" if attempts else ""
        return f"{value['error']}{suffix}"
    return details


async def status(settings: Settings, *, runs: int, say: Say) -> int:
    """Print the backlog, the last ``runs`` runs and the failed ones; return the backlog."""
    connection = await connect(settings)
    try:
        backlog = await staging_table.backlog_detail(connection)
        last = await staging_table.last_runs(connection, runs)
        failed = await staging_table.failed_runs(connection, runs)
    finally:
        await connection.close()
    if backlog["rows"]:
        say(
            f"backlog: {backlog['rows']} unprocessed rows; oldest id {backlog['oldest_id']}, "
            f"created {_when(backlog['oldest_created_at'])}"
        )
    else:
        say("backlog: 0 unprocessed rows")
    say(f"last {len(last)} runs (newest first):" if last else "no runs logged yet")
    for run in last:
        say("  " + describe_run(run))
    if failed:
        say(f"failed runs: {failed[0]['failed_total']} (newest {len(failed)} shown)")
        for run in failed:
            say(
                f"  {_when(run['started_at'])}  from id {run['batch_start_id']}: "
                f"{failure_text(run['error_details'])}"
            )
    else:
        say("failed runs: 0")
    return int(backlog["rows"])


@dataclass
class RequeueReport:
    """How many processed rows of the range were (or would be) marked unprocessed."""

    rows: int = 0
    chunks: int = 0


async def requeue(
    settings: Settings, *, first: int, last: int, dry_run: bool, say: Say
) -> RequeueReport:
    """Mark processed rows with ids ``first``..``last`` unprocessed, chunk by chunk."""
    if first > last:
        raise CommandError(f"--from-id {first} is after --to-id {last}: give the lower id first")
    if first < 1:
        raise CommandError(f"--from-id {first}: staging ids start at 1")
    report = RequeueReport()
    chunks = -(-(last - first + 1) // REQUEUE_CHUNK)
    connection = await connect(settings)
    try:
        for low, high in id_chunks(first, last):
            if dry_run:
                rows = await staging_table.count_processed(connection, low, high)
            else:
                # One statement per chunk, autocommitted: rows go back to the poller
                # as each chunk commits, and no transaction holds the whole range.
                rows = await staging_table.requeue(connection, low, high)
            report.rows += rows
            report.chunks += 1
            if chunks > 1:
                verb = "would requeue" if dry_run else "requeued"
                say(
                    f"... ids {low}-{high}: {verb} {rows} "
                    f"({report.rows} so far, chunk {report.chunks} of {chunks})"
                )
    finally:
        await connection.close()
    return report
