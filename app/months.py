"""Month arithmetic of the monthly ``payments`` partitions, and the window of dates they keep.

The models (the accepted ``payment_date`` window) and partition maintenance
(app/storage/partitions.py) both count in these months, so they sit below both.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta

#: How long a payment the record agent records now must stay clear of prune. payment.intake
#: keeps a record 7 days (retention.ms, scripts/kafka/topics.conf): until then the record can be
#: delivered again (a crash before the offset commit, a rebalance, a reset offset) and must meet
#: its row, not a dropped month. One day more covers clock skew between hosts and a late run.
RECORDING_MARGIN = timedelta(days=8)

#: Webhooks and the staging poller accept for longer still: a record accepted now may wait in
#: payment.intake (a backlog, an outage of Postgres) before the agent decides it, and must still
#: be inside the agent's window then. Two days of waiting are covered; a record that waits longer
#: across a month boundary is dead-lettered ``beyond_retention`` (never recorded, never lost).
ACCEPTING_MARGIN = RECORDING_MARGIN + timedelta(days=2)


def add_months(month: date, months: int) -> date:
    """The first day of the month ``months`` after (or before) ``month``'s."""
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def retention_cutoff(today: date, retention_months: int) -> date:
    """Partitions of months before this one are expired.

    With 12 months on 2026-11-28 the cutoff is 2025-11-01: October 2025 and older
    go, November 2025 stays (the current month and the 12 before it are kept).
    """
    return add_months(date(today.year, today.month, 1), -retention_months)


def expiry(month: date, retention_months: int) -> date:
    """The first day on which ``month``'s partition is expired (prune drops it from then on)."""
    return add_months(date(month.year, month.month, 1), retention_months + 1)


def oldest_kept(now: datetime, retention_months: int, margin: timedelta) -> datetime:
    """The start (UTC) of the oldest month whose partition prune keeps for ``margin`` more.

    A payment_date from then on is in a month that is dropped only after ``now + margin``:
    with 12 months and 8 days, on 2026-11-20 that is 2025-11-01 (November 2025 goes on
    2026-12-01), on 2026-11-25 already 2025-12-01.
    """
    return oldest_kept_on((now + margin).date(), retention_months)


@functools.lru_cache(maxsize=64)
def oldest_kept_on(day: date, retention_months: int) -> datetime:
    """:func:`oldest_kept` for a ``now + margin`` on ``day``.

    Remembered: the window is asked for every record, at the door and in the agent,
    and the answer changes once a day.
    """
    return datetime.combine(retention_cutoff(day, retention_months), time(), UTC)
