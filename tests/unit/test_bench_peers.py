"""The bench's peers do the project's job: same ids, fingerprints and event (bench/peers/job.py).

The peers cannot import ``app`` (the Quix Streams one runs in a virtualenv of its own), so
these keep their copy of the project's rules equal to the project's.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from app.intake.staging import record_from_row
from app.kafka.codecs import encode_event_for
from app.models import DateWindow
from bench.peers import job

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WINDOW = DateWindow(earliest=date(2000, 1, 1), max_future=timedelta(days=1))


def staging_row(**changes: Any) -> dict[str, Any]:
    row = {
        "id": 42,
        "reference_number": "REF-0001",
        "loan_account_number": "LA000123",
        "cif": "CIF000321",
        "amount": Decimal("1234.50"),
        "payment_date": datetime(2026, 11, 20, 8, 30, 15),  # noqa: DTZ001 (staging is naive UTC)
        "payment_channel": "bank_transfer",
        "metadata": '{"batch": "B1", "n": 7}',
    }
    row.update(changes)
    return row


@pytest.mark.parametrize("channel", ["bank_transfer", None])
def test_the_peers_ids_fingerprint_and_event_are_the_projects(channel: str | None) -> None:
    row = staging_row(payment_channel=channel)
    project = record_from_row(row, WINDOW, NOW)
    peer = json.loads(job.encode_intake(row))

    assert job.payment_id_for(peer["reference_number"]) == project.payment_id
    assert job.event_id_for(peer["reference_number"]) == project.event_id
    assert job.fingerprint_of(peer) == project.fingerprint
    recorded_at = "2026-11-28T12:00:01.000000Z"
    key, value = job.encode_event(peer, recorded_at)
    assert key == project.loan_account_number.encode()
    assert json.loads(value) == json.loads(encode_event_for(project, recorded_at))


def test_the_peers_payments_row_is_the_projects() -> None:
    row = staging_row()
    project = record_from_row(row, WINDOW, NOW)
    peer = job.payment_row(json.loads(job.encode_intake(row)))

    assert peer[: len(job.PAYMENT_COLUMNS) - 1] == (
        project.payment_id,
        project.reference_number,
        project.loan_account_number,
        project.cif,
        project.amount,
        project.payment_date.replace(tzinfo=None),
        project.payment_channel,
        "staging",
    )
    assert json.loads(peer[-1]) == project.metadata


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"amount": Decimal("0.00")}, "amount"),
        ({"amount": Decimal("-5.00")}, "amount"),
        ({"payment_date": datetime(1999, 12, 31)}, "payment_date"),  # noqa: DTZ001
        ({"payment_date": datetime(2026, 12, 30)}, "payment_date"),  # noqa: DTZ001
        ({"metadata": "[1, 2, 3]"}, "metadata"),
    ],
)
def test_the_peers_poller_refuses_what_the_project_refuses(
    change: dict[str, Any], problem: str
) -> None:
    row = staging_row(**change)
    with pytest.raises(ValueError, match=problem):
        record_from_row(row, WINDOW, NOW)
    found = job.check_row(row, NOW.replace(tzinfo=None))
    assert found is not None
    assert problem in found
    assert job.check_row(staging_row(), NOW.replace(tzinfo=None)) is None
