"""FAULT_POINT: the test-only ways to break a worker, kept out of the production modules.

The composition root (app/service.py) imports this module only when FAULT_POINT is
set, which Settings refuses under NODE_ENV=production, and hands the record agent
the hooks it builds (``agents.record_payments.FaultHooks``). Nothing else imports
it (an import contract in pyproject.toml says so). The integration tests drive it:
tests/integration/test_recording_crashes.py, test_faults.py and test_data_faults.py.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from agents.record_payments import FaultHooks
from app.models import PaymentRecord
from app.recording.payment_store import PaymentStore, RecordResult

log = logging.getLogger(__name__)

#: Exit code of a worker stopped by FAULT_POINT.
FAULT_EXIT_CODE = 70


def record_hooks(fault_point: str) -> FaultHooks:
    """The record agent's hooks for ``fault_point`` (Settings has checked the name)."""
    if fault_point == "poison_record":
        return FaultHooks(store=_PoisonedStore)
    if fault_point == "freeze_in_transaction":
        return FaultHooks(after_claim=_freeze_once)
    if fault_point == "after_commit":
        return FaultHooks(crash_after_commit=_die)
    return FaultHooks()


#: FAULT_POINT=poison_record: references starting with this fail, unforeseen, in Postgres.
POISON_PREFIX = "POISON-"


class _PoisonedStore(PaymentStore):
    """FAULT_POINT=poison_record: a store whose batches fail when they hold a POISON- reference."""

    async def record(self, records: Sequence[PaymentRecord]) -> RecordResult:
        poisoned = [
            r.reference_number for r in records if r.reference_number.startswith(POISON_PREFIX)
        ]
        if poisoned:
            raise RuntimeError(f"FAULT_POINT poison_record: {poisoned[0]} poisons its batch")
        return await super().record(records)


def _die() -> None:
    """FAULT_POINT=after_commit: vanish like a SIGKILL, with nothing flushed or published."""
    sys.stderr.write("FAULT_POINT after_commit: exiting after the Postgres commit\n")
    sys.stderr.flush()
    os._exit(FAULT_EXIT_CODE)


def _freeze_once() -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """FAULT_POINT=freeze_in_transaction: stop the whole process (SIGSTOP) once, mid-statement.

    The worst moment to freeze: inside the batch's transaction, its references
    claimed and uncommitted, and in the middle of a statement (asyncpg has sent a
    new statement's Parse/Describe/Flush and not yet its Bind/Execute/Sync), so
    Postgres' idle_in_transaction_session_timeout does not reach the session and
    only the other workers' stalled-session check (app/storage/stalled_sessions.py)
    frees the claims. The test sends SIGCONT: the worker wakes as a zombie whose
    session and group membership have expired meanwhile.
    """
    frozen = False

    async def freeze(connection: asyncpg.Connection) -> None:
        nonlocal frozen
        if not frozen:
            frozen = True
            log.warning("FAULT_POINT freeze_in_transaction: stopping with claims uncommitted")
            await connection.prepare("VALUES ('FAULT_POINT freeze_in_transaction')")
            os.kill(os.getpid(), signal.SIGSTOP)

    return freeze
