"""The audit trail of operator actions: one ``audit_log`` row per action (migration 0007).

Wrap an action in :func:`audited`: its row is inserted when it starts and
completed when it ends (``ok`` with the result the action set, or ``failed``
with the error), each on its own short connection, so the action's own
transactions never hold the audit row back and a rolled-back action still
leaves its row. Parameters and results are the operator's inputs and counts:
never a secret, never a record's body.

Actors: the token's name over HTTP, ``AUDIT_ACTOR`` or ``user@host`` on the
command line, ``maintenance`` or the worker id for what the worker does itself.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from mode import Service

from app.settings import Settings
from app.storage import database

log = logging.getLogger(__name__)

Via = Literal["cli", "http", "worker"]

START = """
INSERT INTO payment_service.audit_log (actor, via, action, parameters)
VALUES ($1, $2, $3, $4::jsonb) RETURNING id
"""

FINISH = """
UPDATE payment_service.audit_log
SET finished_at = now(), outcome = $2, result = $3::jsonb
WHERE id = $1
"""


@dataclass
class AuditEntry:
    """The row of one action; set ``result`` to what it came to."""

    id: int
    result: dict[str, Any] = field(default_factory=dict)


def command_line_actor() -> str:
    """Who runs a command: AUDIT_ACTOR (e.g. set by a runbook tool), else login@host."""
    named = os.environ.get("AUDIT_ACTOR", "").strip()
    if named:
        return named[:200]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid-{os.getuid()}"
    return f"{user}@{socket.gethostname()}"[:200]


@asynccontextmanager
async def audited(
    settings: Settings, *, actor: str, via: Via, action: str, parameters: dict[str, Any]
) -> AsyncIterator[AuditEntry]:
    """Run the body as one audited action (see the module doc)."""
    connection = await database.connect(settings)
    try:
        row_id = await connection.fetchval(START, actor, via, action, _json(parameters))
    finally:
        await connection.close()
    entry = AuditEntry(row_id)
    try:
        yield entry
    except BaseException as exc:
        await _finish(
            settings, entry.id, "failed", {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        )
        raise
    await _finish(settings, entry.id, "ok", entry.result)


async def _finish(settings: Settings, row_id: int, outcome: str, result: dict[str, Any]) -> None:
    try:
        connection = await database.connect(settings)
        try:
            await connection.execute(FINISH, row_id, outcome, _json(result))
        finally:
            await connection.close()
    except Exception as exc:
        # The action itself is done; say loudly that its row stays 'started'.
        log.error("audit: could not complete row %d (%s): %r", row_id, outcome, exc)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, default=str, sort_keys=True)


#: A rotation shows as a new fingerprint; PBKDF2 makes guessing a weak secret from one slow.
FINGERPRINT_SALT = b"payment-service audit fingerprint"
FINGERPRINT_ROUNDS = 100_000

LAST_SECRETS = """
SELECT parameters FROM payment_service.audit_log
WHERE action = 'secrets.changed' ORDER BY id DESC LIMIT 1
"""

RECORD_SECRETS = """
INSERT INTO payment_service.audit_log
  (actor, via, action, parameters, outcome, finished_at, result)
VALUES ($1, 'worker', 'secrets.changed', $2::jsonb, 'ok', now(), $3::jsonb)
"""


def fingerprint(secret: str) -> str:
    """Tells two secrets apart without revealing either (12 hex digits of a slow hash)."""
    derived = hashlib.pbkdf2_hmac("sha256", secret.encode(), FINGERPRINT_SALT, FINGERPRINT_ROUNDS)
    return derived.hex()[:12]


def secret_fingerprints(settings: Settings) -> dict[str, Any]:
    """The webhook secrets per channel and the API tokens, as fingerprints and names."""
    channels = {"default": settings.webhook_secret, **settings.webhook_channel_secrets}
    return {
        "webhook_secrets": {
            channel: sorted(fingerprint(secret.get_secret_value()) for secret in secrets)
            for channel, secrets in sorted(channels.items())
        },
        # NAME:ROLE and the digest's start: the digest is of a random token, not a password.
        "api_tokens": sorted(entry.get_secret_value()[:-52] for entry in settings.api_tokens),
    }


async def audit_secret_changes(settings: Settings, actor: str) -> bool:
    """One ``secrets.changed`` row when the secrets differ from the last one recorded.

    Every worker calls this at start; the advisory lock makes the first one write
    the row and the others see it. True when a row was written.
    """
    current = secret_fingerprints(settings)
    connection = await database.connect(settings)
    try:
        async with connection.transaction():
            await connection.execute(
                "SELECT pg_advisory_xact_lock(hashtext('payment_service.audit_log secrets'))"
            )
            last = await connection.fetchval(LAST_SECRETS)
            if last is not None and json.loads(last) == current:
                return False
            previous = {} if last is None else json.loads(last)
            changed = sorted(
                key
                for key in ("webhook_secrets", "api_tokens")
                if previous.get(key) != current[key]
            )
            await connection.execute(
                RECORD_SECRETS, actor, _json(current), _json({"changed": changed})
            )
            return True
    finally:
        await connection.close()


class SecretAudit(Service):
    """At a worker's start: one audit row when its secrets differ from the last recorded."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.settings = settings
        super().__init__(**kwargs)

    @Service.task
    async def _compare(self) -> None:
        try:
            if await audit_secret_changes(self.settings, self.settings.worker_id):
                log.info("audit: the webhook secrets or API tokens changed; recorded in audit_log")
        except Exception as exc:  # Postgres away at start: the next start records it
            log.warning("audit: could not compare the secrets with the last recorded: %r", exc)
