"""The Postgres connection pool, as a service that starts before agents and timers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from mode import Service

from app import tls
from app.exceptions import (
    CertificateRejected,
    DependencyUnavailable,
    PaymentsError,
    RecordsRefused,
)
from app.settings import Settings

log = logging.getLogger(__name__)

#: Longest pause between two connection attempts at start-up.
MAX_BACKOFF_SECONDS = 5.0


class Database(Service):
    """Owns the asyncpg pool. Add it with ``app.add_dependency`` so it starts first."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        super().__init__(**kwargs)

    @property
    def pool(self) -> asyncpg.Pool:
        """The started pool; using it before ``start()`` is a bug, not a state."""
        if self._pool is None:
            raise RuntimeError("Database used before it was started")
        return self._pool

    async def on_start(self) -> None:
        if self._pool is not None:
            return
        self._pool = await connect_pool(self.settings)

    async def on_stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``asyncpg.connect`` and ``asyncpg.create_pool``."""
    return {
        "host": settings.db_host,
        "port": settings.db_port,
        "database": settings.db_database,
        "user": settings.db_username,
        "password": settings.db_password.get_secret_value(),
        "ssl": tls.postgres_ssl(settings),
        "command_timeout": 60,
        "server_settings": {
            "application_name": settings.kafka_client_id,
            "idle_in_transaction_session_timeout": str(
                int(settings.db_idle_in_transaction_timeout_seconds * 1000)
            ),
        },
    }


def certificate_rejected(settings: Settings, exc: BaseException) -> CertificateRejected | None:
    """The error for ``exc`` when a Postgres certificate failed verification; else None."""
    failure = tls.certificate_error(exc)
    if failure is None:
        return None
    where = f"{settings.db_host}:{settings.db_port}/{settings.db_database}"
    return tls.rejected("Postgres", where, failure, "DB_SSL_ROOT_CERT", "DB_HOST")


async def keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond the rollback asyncpg always does first.

    asyncpg's default reset costs a round trip on every release (``RESET ALL``,
    ``UNLISTEN *``, ``CLOSE ALL``, ``pg_advisory_unlock_all()``) for session state
    this service never leaves on a pooled connection: its advisory locks there are
    transaction locks, it never LISTENs, its cursors live inside transactions, and
    the one ``SET`` (the partition prune's lock_timeout) is undone in a ``finally``.
    Migrations, which hold a session lock, use a connection of their own.
    tests/unit/test_database.py keeps that true of the code.
    """


async def connect_pool(settings: Settings) -> asyncpg.Pool:
    """Open a pool, retrying while Postgres is still starting; raise DependencyUnavailable."""
    where = f"{settings.db_host}:{settings.db_port}/{settings.db_database}"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.startup_timeout_seconds
    attempt = 0
    while True:
        attempt += 1
        try:
            pool = await asyncpg.create_pool(
                **connect_options(settings),
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                reset=keep_session,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            rejected = certificate_rejected(settings, exc)
            if rejected is not None:
                raise rejected from exc  # waiting will not make the certificate match
            pause = min(float(attempt), MAX_BACKOFF_SECONDS)
            if loop.time() + pause > deadline:
                raise DependencyUnavailable(
                    f"Postgres at {where} did not answer within "
                    f"{settings.startup_timeout_seconds:g} s ({exc}); "
                    "is it running? (scripts/stack status)"
                ) from exc
            log.warning("Postgres at %s not reachable (attempt %d): %s", where, attempt, exc)
            await asyncio.sleep(pause)
        else:
            log.info(
                "Postgres pool open: %s (%d-%d connections)",
                where,
                pool.get_min_size(),
                pool.get_max_size(),
            )
            return pool


#: Postgres errors that say "not now" rather than "not this": the same work may succeed later.
_RETRIABLE_POSTGRES = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.InsufficientResourcesError,  # too many connections, out of memory/disk
    asyncpg.TransactionRollbackError,  # serialization failure, deadlock
)


def is_retriable(exc: BaseException) -> bool:
    """True when ``exc`` is an outage (connection lost, server restarting), not bad data."""
    if isinstance(exc, PaymentsError):
        return exc.retriable
    return isinstance(exc, (OSError, TimeoutError, *_RETRIABLE_POSTGRES))


#: What a store catches from asyncpg and hands on as :func:`translated`.
POSTGRES_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError)


def translated(exc: BaseException) -> PaymentsError:
    """An asyncpg error in the service's words: an outage, or the data refused.

    Raise it ``from exc``: the cause stays on the chain, where the failure policy
    (app/recording/failures.py) still finds a value the driver could not encode.
    """
    if is_retriable(exc):
        return DependencyUnavailable(f"Postgres did not answer: {exc}")
    return RecordsRefused(str(exc))


async def connect(settings: Settings) -> asyncpg.Connection:
    """One connection for an operator command; DependencyUnavailable says what to check."""
    try:
        return await asyncpg.connect(**connect_options(settings), timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        rejected = certificate_rejected(settings, exc)
        if rejected is not None:
            raise rejected from exc
        where = f"{settings.db_host}:{settings.db_port}/{settings.db_database}"
        raise DependencyUnavailable(
            f"cannot reach Postgres at {where} ({exc}): is it up? "
            "(`make up`, then `scripts/stack status`; DB_HOST/DB_PORT name it)"
        ) from exc
