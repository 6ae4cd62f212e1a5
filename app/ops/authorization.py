"""Who may call the stats and admin endpoints: bearer tokens mapped to roles.

API_TOKENS lists ``NAME:ROLE:SHA256`` entries: the service keeps only each
token's SHA-256, so the configuration (and a leak of it) never holds a usable
token. A request's ``Authorization: Bearer <token>`` is hashed and compared
with every entry in constant time. Roles are ordered: an ``operator`` may do
what a ``viewer`` may (read stats, metrics) plus replays and requeues.

Answers: 401 without a token or with an unknown one (``WWW-Authenticate``
says Bearer), 403 with a token whose role is too low. The token's NAME is the
``actor`` of the audit rows its calls leave (app/ops/operator_audit.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from app.settings import ROLES, Settings

Role = Literal["viewer", "operator"]

#: Tokens this service makes start with this, so a leaked one is recognisable in a scan.
TOKEN_PREFIX = "pst_"  # noqa: S105 (a format prefix, not a token)


@dataclass(frozen=True)
class Caller:
    """A request whose token matched: the token's name and role."""

    name: str
    role: Role


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go on: 401 or 403, with a JSON body."""

    status: int
    error: str
    message: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "message": self.message}

    def headers(self) -> dict[str, str] | None:
        if self.status == 401:
            return {"WWW-Authenticate": 'Bearer realm="payment-service"'}
        return None


def digest(token: str) -> str:
    """The SHA-256 (hex) API_TOKENS holds for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, role: Role) -> tuple[str, str]:
    """A fresh token and its API_TOKENS entry (``NAME:ROLE:SHA256``)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, f"{name}:{role}:{digest(token)}"


def authorize(settings: Settings, authorization: str | None, needed: Role) -> Caller | Refusal:
    """The caller of a request with this ``Authorization`` header, if it may do ``needed``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return Refusal(401, "unauthorized", "send Authorization: Bearer <token> (see API_TOKENS)")
    try:
        presented = digest(token.strip())
    except UnicodeEncodeError:  # bytes that are not UTF-8, as aiohttp decodes them
        return Refusal(401, "unauthorized", "the token is not UTF-8")
    caller: Caller | None = None
    for entry in settings.api_tokens:
        name, role, expected = entry.get_secret_value().split(":")
        # Every entry is compared, matched or not: the time taken says nothing.
        if hmac.compare_digest(presented, expected) and caller is None:
            caller = Caller(name, role)  # type: ignore[arg-type]  # validated in Settings
    if caller is None:
        return Refusal(401, "unauthorized", "unknown or revoked token")
    if ROLES.index(caller.role) < ROLES.index(needed):
        return Refusal(
            403, "forbidden", f"this needs the {needed} role; the token is {caller.role}"
        )
    return caller
