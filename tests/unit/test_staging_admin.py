"""The staging commands' pure parts: id chunks and how runs are shown."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from app.ops.staging_admin import describe_run, failure_text, id_chunks


def test_id_chunks_cover_the_range_inclusively_without_overlap() -> None:
    assert list(id_chunks(1, 25_000)) == [(1, 10_000), (10_001, 20_000), (20_001, 25_000)]
    assert list(id_chunks(5, 5)) == [(5, 5)]
    assert list(id_chunks(9, 3)) == []
    assert list(id_chunks(1, 7, size=3)) == [(1, 3), (4, 6), (7, 7)]
    with pytest.raises(ValueError, match="at least 1"):
        list(id_chunks(1, 2, size=0))


def test_a_run_is_one_line_with_its_figures_and_duration() -> None:
    run = {
        "started_at": datetime(2026, 11, 28, 10, 0, 0),  # noqa: DTZ001 (the log is naive UTC)
        "completed_at": datetime(2026, 11, 28, 10, 0, 1, 500_000),  # noqa: DTZ001
        "status": "completed",
        "batch_start_id": 1,
        "batch_end_id": 1000,
        "total_records": 1000,
        "processed_records": 990,
        "duplicate_records": 8,
        "error_records": 2,
    }
    assert describe_run(run) == (
        "2026-11-28 10:00:00  completed  ids 1-1000: 1000 rows, 990 published, "
        "8 duplicates, 2 invalid in 1.50 s"
    )


def test_failure_text_reads_the_pollers_error_details() -> None:
    details = json.dumps({"error": "PublishFailed('Kafka away')", "attempts": 4})
    assert failure_text(details) == "PublishFailed('Kafka away') (after 4 attempts)"
    assert failure_text(None) == "(no details)"
    assert failure_text("not json") == "not json"
    assert failure_text('{"other": 1}') == '{"other": 1}'
