"""Ending our Postgres sessions that wait, mid-statement, for a client that stopped.

Postgres ends a session idle inside a transaction after
``idle_in_transaction_session_timeout`` (DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS), so a
frozen worker's claims and locks go and another worker can take over. It does not
when the client stopped in the middle of a statement. asyncpg sends a statement it
has not prepared on that connection yet as Parse/Describe/Flush and the
Bind/Execute/Sync only after the answer; a COPY streams its rows. A worker frozen
in between (SIGSTOP, a paused container, a debugger) leaves its backend ``active``
and waiting on ``ClientRead`` with every lock of its transaction, for as long as
the process lives: its kernel still answers TCP keepalives, and Postgres ignores
statement_timeout while it reads a command. One such freeze in a poller's batch
keeps its claimed staging rows from every other worker (SKIP LOCKED passes them
by); in the record agent's, it blocks whoever records the same references.

So every worker looks, every quarter of that timeout, for sessions of this
service (same database, user and application_name: the KAFKA_CLIENT_ID) that have
waited on their client like that for longer than the timeout, and ends them with
``pg_terminate_backend``: the rule Postgres applies to idle ones, applied to the
state it leaves out. A live client never waits that long inside one statement: its
statements here are batches, answered in milliseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from app.instruments import STALLED_SESSIONS_ENDED

log = logging.getLogger(__name__)

# state_change is when the statement's first message arrived (its Parse, or the COPY).
# This service's statements are batches, done in milliseconds: one whose backend still
# waits on its client after the timeout has a client that stopped. Sessions of other
# roles show no state here, and other applications' are not ours to end.
END_STALLED = """
SELECT pid,
       host(client_addr) AS client,
       client_port,
       wait_event,
       extract(epoch FROM clock_timestamp() - state_change)::float8 AS seconds,
       left(query, 120) AS query,
       pg_terminate_backend(pid) AS ended
FROM pg_stat_activity
WHERE backend_type = 'client backend'
  AND datname = current_database()
  AND usename = current_user
  AND application_name = current_setting('application_name')
  AND pid <> pg_backend_pid()
  AND state = 'active'
  AND wait_event_type = 'Client'
  AND wait_event IN ('ClientRead', 'ClientWrite')
  AND state_change < clock_timestamp() - make_interval(secs => $1)
"""


@dataclass(frozen=True)
class StalledSession:
    """A session ended because its client stopped mid-statement."""

    pid: int
    client: str
    wait_event: str
    seconds: float
    query: str


async def end_stalled(connection: asyncpg.Connection, after_seconds: float) -> list[StalledSession]:
    """End sessions of ``connection``'s application stalled mid-statement over ``after_seconds``.

    The application_name is compared as Postgres holds it (cut to 63 bytes, say), so
    the pool's connections find their own kind whatever KAFKA_CLIENT_ID is.
    """
    rows = await connection.fetch(END_STALLED, float(after_seconds))
    ended = [
        StalledSession(
            pid=row["pid"],
            client=f"{row['client'] or 'local'}:{row['client_port'] or ''}".rstrip(":"),
            wait_event=row["wait_event"],
            seconds=row["seconds"],
            query=row["query"],
        )
        for row in rows
        if row["ended"]
    ]
    for session in ended:
        log.warning(
            "postgres: ended session %d (client %s): it had waited %.0f s mid-statement for its "
            "client (%s; %r), past DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS=%g; a frozen process's "
            "session: its transaction rolls back and its locks and claims go to the other workers",
            session.pid,
            session.client,
            session.seconds,
            session.wait_event,
            session.query,
            after_seconds,
        )
    STALLED_SESSIONS_ENDED.inc(len(ended))
    return ended


def check_interval(timeout_seconds: float) -> float:
    """How often a worker looks: a quarter of the timeout, at least once a second."""
    return max(1.0, timeout_seconds / 4)
