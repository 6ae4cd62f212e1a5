"""The staging poller's lock on a real Postgres: one drain at a time, and no snapshot held."""

from __future__ import annotations

import asyncpg

from app.storage import staging_table
from tests.stack import Stack


async def test_the_poller_lock_refuses_a_second_drain_and_pins_no_snapshot(stack: Stack) -> None:
    first = await asyncpg.connect(**stack.db_connect_kwargs())
    second = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        drain = first.transaction()
        await drain.start()
        assert await staging_table.take_poller_lock(first)
        assert await staging_table.take_poller_lock(first)  # the touch before each batch
        # Idle between batches, the lock's transaction must not hold the xmin horizon
        # back (vacuum) for the whole drain.
        session = await second.fetchrow(
            "SELECT state, backend_xmin FROM pg_stat_activity WHERE pid = $1",
            first.get_server_pid(),
        )
        assert (session["state"], session["backend_xmin"]) == ("idle in transaction", None)

        other = second.transaction()
        await other.start()
        assert not await staging_table.take_poller_lock(second)
        await other.rollback()

        await drain.rollback()  # the drain ends: the lock with it
        other = second.transaction()
        await other.start()
        assert await staging_table.take_poller_lock(second)
        await other.rollback()
    finally:
        await first.close()
        await second.close()
