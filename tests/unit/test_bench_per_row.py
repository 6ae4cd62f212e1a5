"""bench/per_row.py times every stage of a staged row's own code, on rows the pipeline accepts."""

from __future__ import annotations

from bench.per_row import ROWS, Stages


def test_a_pass_times_every_stage_on_rows_that_are_all_accepted() -> None:
    stages = Stages()
    try:
        took = stages.run()
    finally:
        stages.close()
    assert list(took) == [
        "check + encode (poller)",
        "partition intake keys",
        "decode + window (agent)",
        "ids + fingerprint (agent)",
        "references table (agent)",
        "event JSON (agent)",
        "partition event keys",
        "decisions + audit lines (agent)",
    ]
    assert all(seconds >= 0 for seconds in took.values())
    assert sum(took.values()) > 0
    # Every row is a valid payment: the timings are of the path a good row takes.
    assert stages.accepted == ROWS
    # The table's stage wrote every row's reference, each in its partition's database.
    reference = f"{stages.passes}-BENCH-{ROWS - 1:08d}"
    partition = stages.partition(reference.encode())
    assert stages.references.get(stages.events[partition], reference) is not None
