"""Applies the SQL files in migrations/ in order, each once, recorded in schema_migrations.

A file is ``NNNN_name.sql``. Each runs in its own transaction together with its
ledger row, under an advisory lock so that two workers starting at once do not
race. A file edited after it was applied is refused: add a new migration instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from app.exceptions import MigrationError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
#: Any constant both runners agree on; it names "the migration lock".
LOCK_KEY = 0x7061796D  # "paym"

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
  version TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  checksum TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
APPLIED = "SELECT version, checksum FROM public.schema_migrations"
RECORD = "INSERT INTO public.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in ``directory``, ordered by version; a misnamed .sql file is an error."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migrations.append(Migration(match["version"], match["name"], path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version in {directory}")
    return migrations


async def migrate(
    connection: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply what is pending; return what was applied (empty when up to date)."""
    migrations = discover() if migrations is None else migrations
    await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        await connection.execute(CREATE_LEDGER)
        applied = {row["version"]: row["checksum"] for row in await connection.fetch(APPLIED)}
        for migration in migrations:
            if migration.version in applied and applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} was edited after it was "
                    "applied; revert the edit and add a new migration instead"
                )
        pending = [m for m in migrations if m.version not in applied]
        for migration in pending:
            log.info("applying migration %s_%s", migration.version, migration.name)
            try:
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        RECORD, migration.version, migration.name, migration.checksum
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version}_{migration.name} failed: {exc}"
                ) from exc
        return pending
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
