"""The migration runner's offline half: discovery, ordering and naming rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.exceptions import MigrationError
from app.storage.migrations import discover


def test_project_migrations_are_ordered_and_complete() -> None:
    migrations = discover()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert versions[:3] == ["0001", "0002", "0003"]
    everything = "\n".join(m.sql for m in migrations)
    for table in (
        "public.payment_staging",
        "payment_service.payments",
        "payment_service.payment_references",
        "payment_service.staging_process_log",
        "payment_service.outbox",
    ):
        assert (
            f"CREATE TABLE IF NOT EXISTS {table}" in everything
            or f"CREATE TABLE {table}" in everything
        )


def test_a_misnamed_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;")
    (tmp_path / "2-bad name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        discover(tmp_path)


def test_two_files_with_one_version_are_refused(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="share a version"):
        discover(tmp_path)


def test_checksum_follows_the_content(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    first = discover(tmp_path)[0].checksum
    (tmp_path / "0001_a.sql").write_text("SELECT 2;")
    assert discover(tmp_path)[0].checksum != first
