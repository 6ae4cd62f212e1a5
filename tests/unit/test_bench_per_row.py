"""bench/per_row.py times every stage of a staged row's own code, on rows the pipeline accepts."""

from __future__ import annotations

from bench.per_row import ROWS, Stages


def test_a_pass_times_every_stage_on_rows_that_are_all_accepted() -> None:
    stages = Stages()
    took = stages.run()
    assert list(took) == [
        "rows to the helper (pickle)",
        "check + encode (helper)",
        "results back (pickle)",
        "partition intake keys",
        "decode + window (agent)",
        "ids + fingerprint (agent)",
        "event JSON (agent)",
        "partition event keys",
        "decisions + audit lines (agent)",
    ]
    assert all(seconds >= 0 for seconds in took.values())
    assert sum(took.values()) > 0
    # Every row is a valid payment: the timings are of the path a good row takes.
    assert stages.accepted == ROWS
