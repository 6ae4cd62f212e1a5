"""Sessions stalled mid-statement by a frozen client, on a real Postgres: ended, and only those.

A client frozen between asyncpg's Parse/Describe/Flush and its Bind/Execute/Sync
leaves its backend ``active`` and waiting on ``ClientRead``, where Postgres' own
idle_in_transaction_session_timeout does not reach; its row locks stay.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.instruments import STALLED_SESSIONS_ENDED
from app.storage import stalled_sessions
from tests.stack import Stack

# Locks one row of the table, then stops itself mid-statement: ``prepare``, after
# preparing a statement it has not run (asyncpg sends Parse/Describe/Flush and waits
# for nothing more); ``copy``, inside a COPY its rows have not reached yet.
FROZEN_CLIENT = """
import asyncio, json, os, signal, sys
import asyncpg

async def main():
    options, table, row, name, how = json.loads(sys.argv[1]), *sys.argv[2:]
    connection = await asyncpg.connect(**options, server_settings={
        "application_name": name, "idle_in_transaction_session_timeout": "600000"})
    await connection.execute("BEGIN")
    await connection.fetch(f"SELECT id FROM {table} WHERE id = {int(row)} FOR UPDATE")
    if how == "prepare":
        await connection.prepare(f"SELECT count(*) FROM {table} WHERE id > $1")
        os.kill(os.getpid(), signal.SIGSTOP)

    async def rows():
        os.kill(os.getpid(), signal.SIGSTOP)
        yield (10 + int(row),)

    await connection.copy_records_to_table(table, records=rows(), columns=["id"])

asyncio.run(main())
"""


@pytest.fixture
async def table(stack: Stack) -> AsyncIterator[str]:
    connection = await asyncpg.connect(**stack.db_connect_kwargs())
    try:
        await connection.execute("DROP TABLE IF EXISTS stalled_probe")
        await connection.execute("CREATE TABLE stalled_probe (id int PRIMARY KEY)")
        await connection.execute("INSERT INTO stalled_probe VALUES (1), (2)")
        yield "stalled_probe"
    finally:
        await connection.execute("DROP TABLE IF EXISTS stalled_probe")
        await connection.close()


def _freeze(stack: Stack, table: str, row: int, name: str, how: str) -> subprocess.Popen[bytes]:
    options = json.dumps(stack.db_connect_kwargs())
    return subprocess.Popen(
        [sys.executable, "-c", FROZEN_CLIENT, options, table, str(row), name, how]
    )


async def _stalled(connection: asyncpg.Connection, name: str) -> int:
    """The backend pid of ``name``'s session once it waits mid-statement on its client."""
    for _ in range(200):
        pid = await connection.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = left($1, 63)"
            " AND state = 'active' AND wait_event = 'ClientRead'",
            name,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name}'s session never stalled mid-statement")


async def _free_rows(connection: asyncpg.Connection) -> list[int]:
    async with connection.transaction():
        rows = await connection.fetch(
            "SELECT id FROM stalled_probe ORDER BY id FOR UPDATE SKIP LOCKED"
        )
    return [row["id"] for row in rows]


@pytest.mark.parametrize(("how", "statement"), [("prepare", "count(*)"), ("copy", "COPY")])
async def test_a_session_stalled_mid_statement_is_ended_and_its_locks_go(
    stack: Stack, table: str, how: str, statement: str
) -> None:
    # Postgres keeps 63 bytes of an application_name: a longer KAFKA_CLIENT_ID must
    # still find its own sessions.
    ours, theirs = "stalled-ours-" + "x" * 60, "stalled-theirs"
    frozen = [_freeze(stack, table, 1, ours, how), _freeze(stack, table, 2, theirs, how)]
    # The checker is a session of "ours" too (the pool's connections are), and so is
    # an idle one that must be left alone.
    watcher = await asyncpg.connect(
        **stack.db_connect_kwargs(), server_settings={"application_name": ours}
    )
    idle = await asyncpg.connect(
        **stack.db_connect_kwargs(), server_settings={"application_name": ours}
    )
    try:
        our_pid, their_pid = await _stalled(watcher, ours), await _stalled(watcher, theirs)
        await asyncio.sleep(1.2)
        # Postgres' own timeout does not reach them: both rows stay locked.
        assert await _free_rows(watcher) == []
        # More than a second into its statement: too young for 60 s.
        assert await stalled_sessions.end_stalled(watcher, 60) == []

        before = STALLED_SESSIONS_ENDED._value.get()
        ended = await stalled_sessions.end_stalled(watcher, 1.0)
        assert [session.pid for session in ended] == [our_pid]
        assert ended[0].wait_event == "ClientRead"
        assert ended[0].seconds >= 1.0
        assert statement in ended[0].query
        assert STALLED_SESSIONS_ENDED._value.get() == before + 1
        # Its transaction rolled back: row 1 is free. Row 2 belongs to a session of
        # another application, which is not ours to end; an idle session of ours stays.
        for _ in range(100):  # pg_terminate_backend signals; the backend ends soon after
            if await _free_rows(watcher) == [1]:
                break
            await asyncio.sleep(0.05)
        assert await _free_rows(watcher) == [1]
        assert (
            await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                [our_pid, their_pid],
            )
            == 1
        )
        assert await idle.fetchval("SELECT 1") == 1
    finally:
        for process in frozen:
            process.send_signal(signal.SIGKILL)
            process.wait()
        await idle.close()
        await watcher.close()
