"""Settings: the plan's defaults, one readable line per bad variable, secrets never echoed."""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from app.__main__ import _warn_of_allowed_insecurity
from app.exceptions import SettingsError
from app.intake.channels import CHANNELS, GENERIC
from app.models import CHANNEL_ENDPOINTS, GENERIC_ENDPOINT
from app.settings import SECRET_CHANNELS, Settings, load_settings
from tests.stack import ROOT

SECRET_A = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_B = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"


def test_defaults_match_the_plan() -> None:
    settings = load_settings()
    plan = {
        "port": 3004,
        "node_env": "development",
        "db_host": "postgres",
        "db_port": 5432,
        "db_database": "collectioncrm",
        "db_username": "postgres",
        "db_pool_min": 10,
        "db_pool_max": 50,
        "redis_host": "redis",
        "redis_port": 6379,
        "redis_ttl_seconds": 86400,
        "kafka_brokers": ["kafka:9092"],
        "kafka_topic": "payment.events",
        "kafka_client_id": "payment-service",
        "kafka_batch_size": 100,
        "staging_batch_size": 1000,
        "staging_interval_seconds": 30,
        "staging_max_retries": 3,
        "webhook_timeout_ms": 5000,
        "enable_memory_cache": True,
        "memory_cache_max_size": 10000,
        "enable_redis_cache": True,
        "reference_cache_ttl_days": 90,
        "partition_retention_months": 12,
        "log_level": "info",
        "enable_metrics": True,
        "metrics_port": 9090,
        "webhook_secret": [],
        "webhook_channel_secrets": {},
        "webhook_ip_allowlist": [],
        "webhook_rate_limit_per_source": 0,
        "webhook_trusted_proxies": [],
        "webhook_max_body_bytes": 65536,
    }
    actual = {name: getattr(settings, name) for name in plan}
    assert actual == plan
    assert settings.db_password.get_secret_value() == "admin_password"


def test_environment_overrides_and_parses_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("KAFKA_BROKERS", "k1:9092, k2:9093")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("WEBHOOK_SECRET", f"{SECRET_A},{SECRET_B}")
    monkeypatch.setenv("WEBHOOK_SECRET_CARD", SECRET_B)
    monkeypatch.setenv("WEBHOOK_IP_ALLOWLIST", "10.0.0.0/8, 192.168.1.7")
    monkeypatch.setenv("WEBHOOK_RATE_LIMIT_PER_SOURCE", "25")
    settings = load_settings()
    assert settings.port == 8080
    assert settings.kafka_brokers == ["k1:9092", "k2:9093"]
    assert settings.kafka_url == "kafka://k1:9092;k2:9093"
    assert settings.log_level == "debug"
    assert [s.get_secret_value() for s in settings.webhook_secret] == [SECRET_A, SECRET_B]
    assert [s.get_secret_value() for s in settings.secrets_for_channel("card")] == [SECRET_B]
    assert [s.get_secret_value() for s in settings.secrets_for_channel("bank")] == [
        SECRET_A,
        SECRET_B,
    ]
    assert settings.webhook_ip_allowlist == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    ]
    assert settings.webhook_rate_limit_per_source == 25


def test_logs_are_json_lines_with_an_audit_trail_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = load_settings()
    assert (settings.log_format, settings.audit_log) == ("json", True)
    monkeypatch.setenv("LOG_FORMAT", " Text ")
    monkeypatch.setenv("AUDIT_LOG", "false")
    settings = load_settings()
    assert (settings.log_format, settings.audit_log) == ("text", False)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PORT", "abc", "PORT='abc': Input should be a valid integer"),
        ("PORT", "70000", "PORT=70000"),
        ("DB_PORT", "0", "DB_PORT=0: Input should be greater than or equal to 1"),
        ("DB_POOL_MAX", "0", "DB_POOL_MAX=0"),
        ("REDIS_PORT", "six", "REDIS_PORT='six'"),
        ("REDIS_TTL_SECONDS", "-5", "REDIS_TTL_SECONDS=-5"),
        ("KAFKA_BROKERS", "kafka", "KAFKA_BROKERS='kafka': each broker must be host:port"),
        ("KAFKA_BROKERS", "", "KAFKA_BROKERS"),
        ("STAGING_BATCH_SIZE", "0", "STAGING_BATCH_SIZE=0"),
        ("STAGING_INTERVAL_SECONDS", "never", "STAGING_INTERVAL_SECONDS='never'"),
        ("STAGING_MAX_RETRIES", "-1", "STAGING_MAX_RETRIES=-1"),
        ("WEBHOOK_TIMEOUT_MS", "0", "WEBHOOK_TIMEOUT_MS=0"),
        ("ENABLE_MEMORY_CACHE", "perhaps", "ENABLE_MEMORY_CACHE='perhaps'"),
        ("REFERENCE_CACHE_TTL_DAYS", "0", "REFERENCE_CACHE_TTL_DAYS=0"),
        ("PARTITION_RETENTION_MONTHS", "x", "PARTITION_RETENTION_MONTHS='x'"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='loud'"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml': Input should be 'json' or 'text'"),
        ("AUDIT_LOG", "sometimes", "AUDIT_LOG='sometimes'"),
        ("NODE_ENV", "moon", "NODE_ENV='moon'"),
        ("METRICS_PORT", "-1", "METRICS_PORT=-1"),
        (
            "WEBHOOK_IP_ALLOWLIST",
            "10.0.0.0/33",
            "WEBHOOK_IP_ALLOWLIST='10.0.0.0/33': '10.0.0.0/33' is not an IP address or CIDR",
        ),
        ("WEBHOOK_RATE_LIMIT_PER_SOURCE", "-1", "WEBHOOK_RATE_LIMIT_PER_SOURCE=-1"),
    ],
)
def test_each_bad_value_gives_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{variable}")
    # Normalise: pydantic quotes non-string inputs from the environment as strings.
    assert expected.replace("'", "") in message.replace("'", "")


def test_pool_bounds_are_checked_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MIN", "20")
    monkeypatch.setenv("DB_POOL_MAX", "5")
    with pytest.raises(SettingsError, match=r"^configuration: DB_POOL_MIN \(20\) must not exceed"):
        load_settings()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"WEBHOOK_PROCESSES": "2"}, "WEBHOOK_PORT is required when WEBHOOK_PROCESSES"),
        ({"WEBHOOK_PROCESSES": "2", "PORT": "3004", "WEBHOOK_PORT": "3004"}, "must differ"),
        ({"PORT": "9090"}, r"METRICS_PORT \(9090\) must differ from PORT"),
        ({"WEBHOOK_PORT": "3005", "METRICS_PORT": "3005"}, "METRICS_PORT .* must differ"),
    ],
)
def test_webhook_processes_need_a_port_of_their_own(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()


@pytest.mark.parametrize("variable", ["WEBHOOK_SECRET", "WEBHOOK_SECRET_CARD"])
def test_a_malformed_secret_is_named_but_never_echoed(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "hunter2-not-a-whsec")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(variable)
    assert "whsec_" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("variable", "channel"),
    [("WEBHOOK_SECRET_CARDS", "cards"), ("WEBHOOK_SECRET_BANKTRANSFER", "banktransfer")],
)
def test_a_secret_for_a_channel_that_does_not_exist_is_refused_naming_those_that_do(
    monkeypatch: pytest.MonkeyPatch, variable: str, channel: str
) -> None:
    monkeypatch.setenv(variable, SECRET_A)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == (
        f"{variable}: no channel {channel!r}; channels: bank_transfer, card, generic"
    )


def test_the_secret_channels_are_the_webhook_endpoints() -> None:
    assert {GENERIC_ENDPOINT, *CHANNEL_ENDPOINTS} == SECRET_CHANNELS
    assert {GENERIC.name, *CHANNELS} == SECRET_CHANNELS


@pytest.mark.parametrize(
    ("variable", "secrets", "problem"),
    [
        ("WEBHOOK_SECRET", "whsec_abc", "the key is 2 bytes, at least 24 are needed"),
        ("WEBHOOK_SECRET", "whsec_!!!!", "what follows 'whsec_' is not base64"),
        ("WEBHOOK_SECRET_CARD", "whsec_" + "A" * 31 + "-", "is not base64"),  # URL-safe
        ("WEBHOOK_SECRET", f"{SECRET_A},whsec_abc", "(secret 2 of 2): the key is 2 bytes"),
    ],
)
def test_a_secret_that_is_not_base64_or_too_short_is_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, secrets: str, problem: str
) -> None:
    monkeypatch.setenv(variable, secrets)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(variable)
    assert problem in message
    for echoed in ("abc", "!!!!", SECRET_A.removeprefix("whsec_")):
        assert echoed not in message


def test_two_bad_values_give_two_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PORT", "x")
    monkeypatch.setenv("REDIS_PORT", "y")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert [line.split("=")[0] for line in lines] == ["DB_PORT", "REDIS_PORT"]


def test_the_process_stops_with_one_line_per_bad_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "DB_PORT": "not-a-port", "DB_PASSWORD": "s3cret-pw"}
    result = subprocess.run(
        [sys.executable, "-m", "app", "worker"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "payment-service: invalid configuration: DB_PORT='not-a-port': "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_the_timeouts_that_bound_a_hung_worker_reach_kafka_and_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.service import create_app
    from app.storage.database import connect_options

    settings = Settings(
        kafka_session_timeout_seconds=12, db_idle_in_transaction_timeout_seconds=7.5
    )
    assert connect_options(settings)["server_settings"]["idle_in_transaction_session_timeout"] == (
        "7500"
    )
    assert create_app(settings).conf.broker_session_timeout == 12
    monkeypatch.setenv("KAFKA_SESSION_TIMEOUT_SECONDS", "3")  # under the broker's minimum
    with pytest.raises(SettingsError, match="KAFKA_SESSION_TIMEOUT_SECONDS"):
        load_settings()


def test_a_payment_date_min_after_the_latest_accepted_date_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    later = (datetime.now(UTC) + timedelta(days=3)).date()
    monkeypatch.setenv("PAYMENT_DATE_MIN", later.isoformat())
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"configuration: PAYMENT_DATE_MIN ({later}) is after the latest")
    assert "PAYMENT_DATE_MAX_FUTURE_DAYS=1" in message
    # The same date is fine once the future bound reaches it.
    monkeypatch.setenv("PAYMENT_DATE_MAX_FUTURE_DAYS", "4")
    assert load_settings().payment_date_min == later


def test_a_future_bound_past_a_year_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_DATE_MAX_FUTURE_DAYS", "1e9")
    with pytest.raises(SettingsError, match=r"^PAYMENT_DATE_MAX_FUTURE_DAYS=.*less than or equal"):
        load_settings()


#: NODE_ENV=production with every setting it checks safe.
SAFE_PRODUCTION = {
    "NODE_ENV": "production",
    "DB_SSLMODE": "verify-full",
    "KAFKA_SECURITY_PROTOCOL": "SSL",
    "REDIS_TLS": "true",
    "WEBHOOK_SECRET": SECRET_A,
    "DB_PASSWORD": "a-password-of-our-own",
}


def test_production_starts_with_safe_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SAFE_PRODUCTION.items():
        monkeypatch.setenv(name, value)
    assert load_settings().unsafe_settings == []


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("DB_SSLMODE", "require", "DB_SSLMODE=require: NODE_ENV=production needs verify-ca"),
        ("DB_SSLMODE", "prefer", "DB_SSLMODE=prefer: NODE_ENV=production needs verify-ca"),
        ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "KAFKA_SECURITY_PROTOCOL=PLAINTEXT: "),
        ("REDIS_TLS", "false", "REDIS_TLS=false: NODE_ENV=production needs true"),
        ("WEBHOOK_SECRET", None, "WEBHOOK_SECRET is not set: "),
        ("DB_PASSWORD", "admin_password", "DB_PASSWORD is the plan's sample password: "),
    ],
)
def test_production_refuses_each_unsafe_setting_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str | None, line: str
) -> None:
    for name, safe in SAFE_PRODUCTION.items():
        monkeypatch.setenv(name, safe)
    if value is None:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"configuration: {line}")
    assert f"ALLOW_INSECURE={variable}" in message
    assert "admin_password" not in message

    monkeypatch.setenv("ALLOW_INSECURE", f"redis_tls, {variable.lower()}")
    assert load_settings().unsafe_settings == [variable]
    monkeypatch.setenv("NODE_ENV", "staging")
    monkeypatch.delenv("ALLOW_INSECURE")
    assert load_settings().unsafe_settings == [variable]  # only production refuses


def test_production_with_every_default_says_each_in_its_own_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NODE_ENV", "production")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    named = [
        line.split(": ")[1].split("=")[0].split(" ")[0] for line in str(caught.value).splitlines()
    ]
    assert named == [
        "DB_PASSWORD",
        "DB_SSLMODE",
        "KAFKA_SECURITY_PROTOCOL",
        "REDIS_TLS",
        "WEBHOOK_SECRET",
    ]


def test_allow_insecure_names_only_what_production_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_INSECURE", "DB_SSLMODE,TLS_EVERYWHERE")
    with pytest.raises(
        SettingsError,
        match=(
            r"^ALLOW_INSECURE='DB_SSLMODE,TLS_EVERYWHERE': no such setting to allow: "
            r"TLS_EVERYWHERE; use any of DB_SSLMODE"
        ),
    ):
        load_settings()


def test_what_allow_insecure_lets_production_run_with_is_logged_at_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name, value in SAFE_PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_TLS", "false")
    monkeypatch.setenv("DB_SSLMODE", "require")
    monkeypatch.setenv("ALLOW_INSECURE", "REDIS_TLS,DB_SSLMODE,KAFKA_SECURITY_PROTOCOL")
    with caplog.at_level(logging.WARNING, logger="app"):
        _warn_of_allowed_insecurity(load_settings())
    assert [record.getMessage() for record in caplog.records] == [
        "ALLOW_INSECURE: running in production with DB_SSLMODE, REDIS_TLS as they are "
        "(a trusted network only)"
    ]
