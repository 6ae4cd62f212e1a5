"""The maintenance timer: leader only, every PARTITION_MAINTENANCE_INTERVAL_SECONDS.

Creates the partitions ahead, drops the expired ones (PARTITION_AUTO_PRUNE), and
removes references past REFERENCE_CACHE_TTL_DAYS (app/storage/partitions.py,
app/recording/retention.py). Each step logs what it did; a failed step is retried at the
next tick and does not stop the others. An expired month that holds rows recorded
after the accepted window had closed on it is kept, with an error each run and
``payments_partitions_kept_total`` counting it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust

from app.instruments import PARTITIONS_KEPT
from app.ops.operator_audit import audited
from app.recording.retention import prune_references, reference_cutoff
from app.settings import Settings
from app.storage import partitions
from app.storage.database import Database

log = logging.getLogger(__name__)


def register(app: faust.App, *, settings: Settings, database: Database) -> None:
    """Add the maintenance timer to ``app``."""

    async def maintain_partitions() -> None:
        now = datetime.now(UTC)
        async with database.pool.acquire() as connection:
            try:
                created = await partitions.ensure(connection, now.date())
                if created:
                    log.info("maintenance: created partitions %s", ", ".join(created))
                months = settings.partition_retention_months
                doomed = await partitions.expired(connection, now.date(), months)
                if doomed and settings.partition_auto_prune:
                    parameters = {"retention_months": months, "dry_run": False}
                    async with audited(
                        settings,
                        actor="maintenance",
                        via="worker",
                        action="partitions.prune",
                        parameters=parameters,
                    ) as entry:
                        pruned = await partitions.prune(
                            connection, now.date(), months, dry_run=False
                        )
                        entry.result = {
                            "partitions": [partition.name for partition in pruned.dropped],
                            "kept": [held.partition.name for held in pruned.held],
                        }
                    PARTITIONS_KEPT.inc(len(pruned.held))
                elif doomed:
                    log.warning(
                        "maintenance: %d partitions are past PARTITION_RETENTION_MONTHS=%d (%s); "
                        "PARTITION_AUTO_PRUNE is off: run `python -m app partitions prune`",
                        len(doomed),
                        settings.partition_retention_months,
                        ", ".join(partition.name for partition in doomed),
                    )
            except Exception as exc:
                log.warning("maintenance: partitions: %r; retrying at the next tick", exc)
            try:
                cutoff = reference_cutoff(now, settings.reference_cache_ttl_days)
                run = await prune_references(connection, cutoff, dry_run=False)
                if run.removed:
                    log.info(
                        "maintenance: removed %d references created before %s",
                        run.removed,
                        cutoff.isoformat(),
                    )
            except Exception as exc:
                log.warning("maintenance: references: %r; retrying at the next tick", exc)

    app.timer(
        settings.partition_maintenance_interval_seconds, on_leader=True, name="maintain_partitions"
    )(maintain_partitions)
