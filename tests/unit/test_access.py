"""Bearer tokens and roles, secrets from files, and what the audit fingerprints reveal."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.exceptions import SettingsError
from app.ops.authorization import Caller, Refusal, authorize, digest, new_token
from app.ops.operator_audit import fingerprint, secret_fingerprints
from app.settings import Settings, load_settings

VIEWER, VIEWER_ENTRY = new_token("grafana", "viewer")
OPERATOR, OPERATOR_ENTRY = new_token("alice", "operator")
SETTINGS = Settings(api_tokens=f"{VIEWER_ENTRY},{OPERATOR_ENTRY}")


@pytest.mark.parametrize(
    ("header", "needed", "expected"),
    [
        (None, "viewer", 401),
        ("", "viewer", 401),
        (f"Basic {VIEWER}", "viewer", 401),
        ("Bearer ", "viewer", 401),
        ("Bearer pst_not-a-token", "viewer", 401),
        (f"Bearer {VIEWER}x", "viewer", 401),
        (f"Bearer {VIEWER}", "viewer", Caller("grafana", "viewer")),
        (f"bearer {VIEWER}", "viewer", Caller("grafana", "viewer")),
        (f"Bearer {VIEWER}", "operator", 403),
        (f"Bearer {OPERATOR}", "viewer", Caller("alice", "operator")),
        (f"Bearer {OPERATOR}", "operator", Caller("alice", "operator")),
    ],
)
def test_the_role_matrix(header: str | None, needed: str, expected: object) -> None:
    found = authorize(SETTINGS, header, needed)  # type: ignore[arg-type]
    if isinstance(expected, int):
        assert isinstance(found, Refusal)
        assert found.status == expected
        assert (found.headers() is not None) == (expected == 401)
    else:
        assert found == expected


def test_no_tokens_configured_refuses_everyone() -> None:
    assert isinstance(authorize(Settings(), f"Bearer {OPERATOR}", "viewer"), Refusal)


def test_the_configuration_holds_digests_only() -> None:
    assert OPERATOR not in OPERATOR_ENTRY
    assert OPERATOR_ENTRY.endswith(digest(OPERATOR))
    assert OPERATOR.startswith("pst_")


@pytest.mark.parametrize(
    "entries",
    [
        "alice:admin:" + "0" * 64,  # no such role
        "alice:viewer:" + "0" * 63,  # short digest
        "alice:viewer",  # no digest
        "al ice:viewer:" + "0" * 64,  # bad name
        "alice:viewer:" + "0" * 64 + ":extra",
        f"alice:viewer:{'0' * 64},alice:operator:{'1' * 64}",  # a name twice
    ],
)
def test_bad_token_entries_are_refused_without_echoing_them(
    entries: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_TOKENS", entries)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "API_TOKENS" in str(refused.value)
    assert "0" * 63 not in str(refused.value)


def test_every_secret_can_come_from_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "DB_PASSWORD_FILE": "db-secret-from-file\n",
        "REDIS_PASSWORD_FILE": "redis-secret-from-file",
        "KAFKA_SASL_PASSWORD_FILE": "sasl-secret-from-file\r\n",
        "WEBHOOK_SECRET_FILE": "whsec_ZGVmYXVsdCBzZWNyZXQgZnJvbSBhIGZpbGU=\n",
        "WEBHOOK_SECRET_CARD_FILE": "whsec_Y2FyZCBzZWNyZXQgZnJvbSBhIGZpbGUsIGxvbmc=",
        "API_TOKENS_FILE": OPERATOR_ENTRY + "\n",
    }
    for name, content in files.items():
        path = tmp_path / name.lower()
        path.write_text(content)
        monkeypatch.setenv(name, str(path))
    settings = load_settings()
    assert settings.db_password.get_secret_value() == "db-secret-from-file"
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "redis-secret-from-file"
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "sasl-secret-from-file"
    assert [s.get_secret_value() for s in settings.webhook_secret] == [
        "whsec_ZGVmYXVsdCBzZWNyZXQgZnJvbSBhIGZpbGU="
    ]
    assert [s.get_secret_value() for s in settings.secrets_for_channel("card")] == [
        "whsec_Y2FyZCBzZWNyZXQgZnJvbSBhIGZpbGUsIGxvbmc="
    ]
    assert isinstance(authorize(settings, f"Bearer {OPERATOR}", "operator"), Caller)
    assert "db-secret-from-file" not in repr(settings)


def test_a_secret_and_its_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "password").write_text("one")
    monkeypatch.setenv("DB_PASSWORD", "two")
    monkeypatch.setenv("DB_PASSWORD_FILE", str(tmp_path / "password"))
    with pytest.raises(SettingsError, match="DB_PASSWORD and DB_PASSWORD_FILE are both set"):
        load_settings()


def test_a_missing_secret_file_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET_CARD_FILE", "/nonexistent/card")
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET_CARD_FILE='/nonexistent/card'"):
        load_settings()


def test_fingerprints_tell_secrets_apart_and_hide_them() -> None:
    old = Settings(
        webhook_secret="whsec_b2xkIHNlY3JldCBiZWZvcmUgdGhlIHJvdGF0aW9u", api_tokens=OPERATOR_ENTRY
    )
    new = Settings(
        webhook_secret="whsec_bmV3IHNlY3JldCBhZnRlciB0aGUgcm90YXRpb24h", api_tokens=OPERATOR_ENTRY
    )
    assert secret_fingerprints(old) != secret_fingerprints(new)
    assert secret_fingerprints(old) == secret_fingerprints(
        Settings(
            webhook_secret="whsec_b2xkIHNlY3JldCBiZWZvcmUgdGhlIHJvdGF0aW9u",
            api_tokens=OPERATOR_ENTRY,
        )
    )
    shown = str(secret_fingerprints(old))
    assert "b2xkIHNlY3JldCBiZWZvcmUgdGhlIHJvdGF0aW9u" not in shown
    assert digest(OPERATOR) not in shown
    assert "alice:operator:" in shown
    assert len(fingerprint("x")) == 12
