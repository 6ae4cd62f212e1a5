"""The month arithmetic behind partition maintenance and reference retention."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from app.months import add_months, retention_cutoff
from app.recording.retention import reference_cutoff
from app.storage.partitions import partition_name


@pytest.mark.parametrize(
    ("month", "months", "expected"),
    [
        (date(2026, 11, 1), 3, date(2027, 2, 1)),
        (date(2026, 1, 1), -1, date(2025, 12, 1)),
        (date(2026, 12, 1), 1, date(2027, 1, 1)),
        (date(2026, 11, 1), -12, date(2025, 11, 1)),
        (date(2026, 3, 1), -27, date(2023, 12, 1)),
    ],
)
def test_add_months_crosses_years(month: date, months: int, expected: date) -> None:
    assert add_months(month, months) == expected


def test_retention_keeps_the_current_month_and_the_n_before_it() -> None:
    assert retention_cutoff(date(2026, 11, 28), 12) == date(2025, 11, 1)
    assert retention_cutoff(date(2026, 11, 1), 1) == date(2026, 10, 1)
    assert retention_cutoff(date(2026, 1, 31), 1) == date(2025, 12, 1)


def test_partition_names_match_the_sql_function() -> None:
    assert partition_name(date(2026, 2, 1)) == "payments_2026_02"


def test_reference_cutoff_is_naive_utc() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert reference_cutoff(now, 90) == datetime(2026, 8, 30, 12, 0, tzinfo=UTC).replace(
        tzinfo=None
    )
