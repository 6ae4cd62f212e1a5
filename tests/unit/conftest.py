"""Unit tests run offline and never depend on the caller's environment."""

from __future__ import annotations

import os

import pytest

from app.settings import WEBHOOK_SECRET_PREFIX, Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove every variable Settings would read (make test exports the stack's)."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields or name.upper().startswith(WEBHOOK_SECRET_PREFIX):
            monkeypatch.delenv(name)
