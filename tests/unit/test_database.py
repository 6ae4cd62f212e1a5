"""The pool skips asyncpg's session reset on release: the code must leave no session state."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.settings import Settings
from app.storage import database

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "app").rglob("*.py"), *(ROOT / "agents").rglob("*.py")])

#: Session advisory locks (the transaction forms say ``_xact_``).
SESSION_LOCK = re.compile(r"pg_(try_)?advisory_lock(_shared)?\(")
#: A session setting changed by a statement (``SET LOCAL`` ends with the transaction).
SESSION_SET = re.compile(r"""["']SET (?!LOCAL\b)(\w+)""")
LISTEN = re.compile(r"""["']LISTEN\b|add_listener\(""")


TEXTS = {str(path.relative_to(ROOT)): path.read_text() for path in SOURCES}


def _uses(pattern: re.Pattern[str]) -> dict[str, str]:
    return {path: text for path, text in TEXTS.items() if pattern.search(text)}


def test_only_migrations_take_a_session_lock_and_on_a_connection_of_their_own() -> None:
    assert list(_uses(SESSION_LOCK)) == ["app/storage/migrations.py"]
    # Its caller opens (and closes) a connection for it, never the pool's.
    commands = (ROOT / "app/ops/commands.py").read_text()
    assert "connection = await database.connect(app.settings)" in commands


def test_a_session_setting_is_reset_where_it_is_set() -> None:
    setting = _uses(SESSION_SET)
    assert setting, "the prune's lock_timeout is expected here"
    for path, text in setting.items():
        for name in SESSION_SET.findall(text):
            assert f"RESET {name}" in text, f"{path} sets {name} and never resets it"


def test_nothing_listens_on_a_pooled_connection() -> None:
    assert _uses(LISTEN) == {}


async def test_the_pool_is_made_with_the_reset_that_keeps_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Pool:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs

        def get_min_size(self) -> int:
            return int(self.kwargs["min_size"])

        def get_max_size(self) -> int:
            return int(self.kwargs["max_size"])

    async def create_pool(**kwargs: Any) -> Pool:
        return Pool(**kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)
    pool = await database.connect_pool(Settings(DB_HOST="127.0.0.1"))
    assert pool.kwargs["reset"] is database.keep_session
