"""The service's configuration: one frozen model read from the environment once.

Every environment variable of the plan's Configuration section is here, with the
plan's defaults (which name the docker-compose hosts `postgres`, `redis`, `kafka`;
the Makefile points them at 127.0.0.1 for the local stack). Nothing else in the
service reads ``os.environ``: build a :class:`Settings` (tests pass values
directly) and hand it down.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.exceptions import SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: LOG_FORMAT: one JSON object per line, or mode's text lines for a terminal.
LogFormat = Literal["json", "text"]

WEBHOOK_SECRET_PREFIX = "WEBHOOK_SECRET_"  # noqa: S105 (a variable name, not a secret)
CHANNEL_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")

#: ``<NAME>_FILE`` names a file holding the secret NAME (Docker and Kubernetes secrets).
FILE_SUFFIX = "_FILE"

#: The settings that are secrets: each may come from ``<NAME>_FILE``, none is ever echoed.
SECRET_FIELDS = (
    "db_password",
    "redis_password",
    "kafka_sasl_password",
    "webhook_secret",
    "api_tokens",
)

#: API token roles, each allowed what the ones before it are.
ROLES = ("viewer", "operator")
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

#: Settings naming a certificate, key or CA file (PEM); each must exist when set.
TLS_FILE_FIELDS = (
    "db_ssl_root_cert",
    "kafka_ssl_ca_file",
    "kafka_ssl_cert_file",
    "kafka_ssl_key_file",
    "redis_tls_ca_file",
)

#: The plan's sample Postgres password (docker-compose.yml): never a production one.
SAMPLE_DB_PASSWORD = "admin_password"  # noqa: S105 (the sample, refused in production)

#: What NODE_ENV=production refuses, per setting ALLOW_INSECURE may name.
PRODUCTION_NEEDS = {
    "DB_SSLMODE": "verify-ca or verify-full",
    "KAFKA_SECURITY_PROTOCOL": "SSL or SASL_SSL",
    "REDIS_TLS": "true",
    "WEBHOOK_SECRET": "one (without it every generic webhook is refused)",
    "DB_PASSWORD": "a password of your own",
}

#: Standard Webhooks secrets are base64 after this prefix.
SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
#: The shortest key the Standard Webhooks specification allows (24 to 64 bytes).
SECRET_MIN_BYTES = 24
#: The endpoints a ``WEBHOOK_SECRET_<CHANNEL>`` may name: app/models.py's, which sits above
#: this module (tests/unit/test_settings.py keeps the two equal).
SECRET_CHANNELS = frozenset({"generic", "bank_transfer", "card"})


def _split_commas(value: Any) -> Any:
    """Turn ``"a, b,,c"`` into ``["a", "b", "c"]``; leave non-strings to pydantic."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _key_bytes(secret: str) -> int | None:
    """How many bytes the base64 after ``whsec_`` decodes to; None when it is not base64."""
    encoded = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        # validate=True: the signing library skips characters outside the alphabet,
        # so "whsec_!!!!" or URL-safe base64 would give another key (or none).
        return len(base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True))
    except (binascii.Error, ValueError):
        return None


def _check_webhook_secrets(secrets: list[SecretStr], name: str) -> list[SecretStr]:
    for number, secret in enumerate(secrets, start=1):
        raw = secret.get_secret_value()
        # Never echo the secret itself: say what shape it must have, and which one.
        which = f"{name} (secret {number} of {len(secrets)})" if len(secrets) > 1 else name
        if not raw.startswith(SECRET_PREFIX) or len(raw) <= len(SECRET_PREFIX):
            raise ValueError(
                f"{name} must be one or more comma-separated secrets that start with "
                f"'{SECRET_PREFIX}' followed by base64"
            )
        size = _key_bytes(raw)
        if size is None:
            raise ValueError(f"{which}: what follows '{SECRET_PREFIX}' is not base64")
        if size < SECRET_MIN_BYTES:
            raise ValueError(
                f"{which}: the key is {size} bytes, at least {SECRET_MIN_BYTES} are needed "
                f"(make one: '{SECRET_PREFIX}' + base64 of {SECRET_MIN_BYTES}+ random bytes)"
            )
    return secrets


class _EnvironSource(PydanticBaseSettingsSource):
    """A settings source that reads the whole environment at once (not one field at a time)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False


class _ChannelSecretsSource(_EnvironSource):
    """Collects ``WEBHOOK_SECRET_<CHANNEL>`` variables into ``webhook_channel_secrets``.

    pydantic-settings maps one variable to one field; per-channel secrets have
    open-ended names, so this source scans for the prefix instead.
    """

    def __call__(self) -> dict[str, Any]:
        channels: dict[str, Any] = {}
        for name, value in self._environ.items():
            upper = name.upper()
            if not upper.startswith(WEBHOOK_SECRET_PREFIX) or upper == "WEBHOOK_SECRET_FILE":
                continue
            channel = upper[len(WEBHOOK_SECRET_PREFIX) :]
            if channel.endswith(FILE_SUFFIX):
                channel = channel.removesuffix(FILE_SUFFIX)
                if f"{WEBHOOK_SECRET_PREFIX}{channel}".lower() in self._environ:
                    raise _both_set(f"{WEBHOOK_SECRET_PREFIX}{channel}")
                value = read_secret_file(upper, value)
            if channel:
                channels[channel.lower()] = value
        return {"webhook_channel_secrets": channels} if channels else {}


class _SecretFilesSource(_EnvironSource):
    """``<NAME>_FILE`` for every secret: the file's content is the value (Docker, Kubernetes).

    Setting both ``NAME`` and ``NAME_FILE`` is refused: which one wins would be a guess.
    """

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in SECRET_FIELDS:
            path = self._environ.get(f"{field}{FILE_SUFFIX.lower()}")
            if path is None:
                continue
            if self._environ.get(field) is not None:
                raise _both_set(field.upper())
            values[field] = read_secret_file(f"{field.upper()}{FILE_SUFFIX}", path)
        return values


def read_secret_file(variable: str, path: str | None) -> str:
    """The secret in ``path`` without its trailing newline; SettingsError naming ``variable``."""
    try:
        return Path(path or "").read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        message = f"{variable}={path!r}: cannot read the secret file ({reason})"
        raise SettingsError(message) from None


def _both_set(variable: str) -> SettingsError:
    return SettingsError(f"{variable} and {variable}{FILE_SUFFIX} are both set: set only one")


class ServerSection(BaseModel):
    """The worker's process: its port, environment, data folder and identity."""

    port: int = Field(3004, ge=1, le=65535)
    node_env: Literal["development", "test", "staging", "production"] = "development"
    allow_insecure: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Settings NODE_ENV=production may leave unsafe, for a trusted network: any of "
            "DB_SSLMODE, KAFKA_SECURITY_PROTOCOL, REDIS_TLS, WEBHOOK_SECRET, DB_PASSWORD; "
            "logged at start."
        ),
    )
    data_dir: str = Field(
        "/var/lib/payment-service",
        description="Faust's data folder (RocksDB tables); one per worker.",
    )
    web_bind: str = Field("0.0.0.0", description="Address the web server listens on.")  # noqa: S104
    worker_id: str = Field(
        "payment-service-1",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description=(
            "Names this worker in the consumer group (static membership): unique per worker, "
            "stable across its restarts."
        ),
    )

    startup_timeout_seconds: float = Field(
        60, gt=0, description="How long start-up waits for Postgres before giving up."
    )


class DatabaseSection(BaseModel):
    """Postgres: where it is, the pool, the idle-in-transaction timeout and TLS."""

    db_host: str = Field("postgres", min_length=1)
    db_port: int = Field(5432, ge=1, le=65535)
    db_database: str = Field("collectioncrm", min_length=1)
    db_username: str = Field("postgres", min_length=1)
    db_password: SecretStr = SecretStr(SAMPLE_DB_PASSWORD)
    db_pool_min: int = Field(10, ge=0)
    db_pool_max: int = Field(50, ge=1)
    db_idle_in_transaction_timeout_seconds: float = Field(
        60,
        ge=0,
        description=(
            "Postgres ends a session of ours idle this long inside a transaction, and the "
            "workers end one stalled this long mid-statement waiting for its client "
            "(app/storage/stalled_sessions.py; 0: neither), so a frozen worker cannot hold "
            "its batch's claims and block the worker that takes over its partitions."
        ),
    )
    db_sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer",
        description=(
            "libpq's sslmode: verify-full (TLS, the CA and the host name checked) in production."
        ),
    )
    db_ssl_root_cert: str | None = Field(
        None, description="CA file for verify-ca/verify-full (default: the system's CAs)."
    )


class RedisSection(BaseModel):
    """Redis: where it is, its password and TLS."""

    redis_host: str = Field("redis", min_length=1)
    redis_port: int = Field(6379, ge=1, le=65535)
    redis_ttl_seconds: int = Field(
        86400,
        ge=1,
        description=(
            "How long a reference stays in the Redis hot cache (ENABLE_REDIS_CACHE); the "
            "webhook-id replay window is 24 h whatever this says."
        ),
    )
    redis_password: SecretStr | None = Field(None, description="Redis AUTH (requirepass).")
    redis_tls: bool = Field(False, description="TLS to Redis (the certificate and host verified).")
    redis_tls_ca_file: str | None = Field(
        None, description="CA file for REDIS_TLS (default: the system's CAs)."
    )


class KafkaSection(BaseModel):
    """Kafka: brokers, the events topic, TLS and SASL, and the consumer group's timing."""

    kafka_brokers: Annotated[list[str], NoDecode] = Field(["kafka:9092"], min_length=1)
    kafka_topic: str = Field("payment.events", min_length=1)
    kafka_client_id: str = Field("payment-service", min_length=1)
    kafka_batch_size: int = Field(
        100,
        ge=1,
        le=100_000,
        description=(
            "Records per record batch our producers send to one partition (the batch API's "
            "count); a batch also ends at 512 KiB (aiokafka's max_batch_size, in bytes)."
        ),
    )
    kafka_linger_ms: int = Field(
        0,
        ge=0,
        le=1_000,
        description=(
            "How long our producers hold a send for company (aiokafka's linger_ms). 0: at "
            "once; under load sends still group, while the request before them is in flight."
        ),
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="SSL: TLS; SASL_SSL: TLS and a SASL login (KAFKA_SASL_*).",
    )
    kafka_ssl_ca_file: str | None = Field(
        None, description="CA file for SSL/SASL_SSL (default: the system's CAs)."
    )
    kafka_ssl_cert_file: str | None = Field(
        None, description="Client certificate (PEM) for brokers that require one."
    )
    kafka_ssl_key_file: str | None = Field(None, description="The client certificate's key (PEM).")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_session_timeout_seconds: float = Field(
        60,
        ge=6,
        le=300,
        description=(
            "A worker silent this long leaves the consumer group and its partitions move "
            "to the others (within the broker's group.min/max.session.timeout.ms)."
        ),
    )
    kafka_replication_factor: int = Field(
        1, ge=1, description="For the topics Faust creates (table changelogs); 3 in production."
    )


class ProcessingSection(BaseModel):
    """The pipeline's pace: staging, the webhook wait, the date window, batches, the relay."""

    staging_enabled: bool = Field(
        True,
        description=(
            "Whether the staging poller runs (false: its timer is not started, staged rows "
            "wait; /health says staging: disabled). The plan's rollout starts with it off."
        ),
    )
    staging_batch_size: int = Field(1000, ge=1, le=100_000)
    staging_interval_seconds: float = Field(30, gt=0)
    staging_max_retries: int = Field(3, ge=0)
    staging_helper_processes: int = Field(
        0,
        ge=0,
        le=8,
        description=(
            "Helper processes that check and encode staging rows (0: the polling worker "
            "itself, a hundred rows per event-loop turn). A helper pays only on a leader "
            "with a core to spare; it costs ~5-15% more CPU per row (bench/README.md)."
        ),
    )
    webhook_timeout_ms: int = Field(5000, ge=1)
    payment_date_min: date = Field(
        date(2000, 1, 1), description="Earliest payment_date accepted (inclusive)."
    )
    payment_date_max_future_days: float = Field(
        1,
        ge=0,
        le=365,
        description="How far past now a payment_date may lie (clock skew, time zones).",
    )
    record_batch_size: int = Field(
        1000, ge=1, le=100_000, description="Records the record agent takes per batch."
    )
    record_batch_window_ms: int = Field(
        50,
        ge=1,
        description=(
            "The longest a record waits for company in the record agent: a batch goes when "
            "full, when nothing more is queued, or after this."
        ),
    )
    outbox_relay_interval_seconds: float = Field(
        5, gt=0, description="How often the relay looks for events a crash left unsent."
    )
    outbox_relay_min_age_seconds: float = Field(
        15,
        ge=0,
        description="The outbox lease: a row is its worker's this long after its commit or "
        "the worker's last renewal (renewed while it publishes); then the relay's.",
    )


class PerformanceSection(BaseModel):
    """Caches, retention, partitions, RocksDB memory, table standbys; tests' FAULT_POINT."""

    enable_memory_cache: bool = Field(
        True,
        description=(
            "An in-process LRU of committed references in each web process and the record "
            "path, in front of Redis, the RocksDB table and Postgres."
        ),
    )
    memory_cache_max_size: int = Field(
        10000,
        ge=0,
        description="References the memory cache holds per process (0: no memory cache).",
    )
    enable_redis_cache: bool = Field(
        True,
        description=(
            "The Redis hot reference cache of the webhook views; false takes it out (the "
            "replay window, stored answers, announcements and rate limits stay: not caches)."
        ),
    )
    cache_warm_hours: float = Field(
        24,
        ge=0,
        description=(
            "At start a worker loads the references recorded in the last this many hours into "
            "its memory cache (0: none); GET /health/startup answers 200 once it is done."
        ),
    )
    reference_cache_ttl_days: int = Field(90, ge=1)
    partition_retention_months: int = Field(12, ge=1)
    partition_maintenance_interval_seconds: float = Field(
        3600,
        gt=0,
        description=(
            "How often the leader ensures partitions ahead, prunes expired ones and "
            "removes expired references."
        ),
    )
    partition_auto_prune: bool = Field(
        True,
        description=(
            "Whether the leader's maintenance drops partitions past PARTITION_RETENTION_MONTHS "
            "(false: it only warns; `python -m app partitions prune` drops them)."
        ),
    )
    partition_budget_bytes: int = Field(
        50 * 1024**3,
        ge=1,
        description="The size one month's partition is planned for (the usage alert's 100%).",
    )
    rocksdb_block_cache_mb: int = Field(
        8,
        ge=1,
        description="Block cache per table partition; 12 partitions share the machine.",
    )
    rocksdb_write_buffer_mb: int = Field(4, ge=1)
    table_standby_replicas: int = Field(
        0,
        ge=0,
        description=(
            "Workers that keep a standby copy of each references-table partition. Each copy "
            "consumes the whole changelog; the table is a cache in front of Postgres, so 0 only "
            "makes a takeover replay the partition's changelog first."
        ),
    )

    fault_point: Literal["", "after_commit", "freeze_in_transaction", "poison_record"] = Field(
        "",
        description=(
            "Tests only: after_commit = the worker kills itself after the Postgres commit, "
            "before the events are published; freeze_in_transaction = it stops itself "
            "(SIGSTOP) once, holding its first batch's claims uncommitted in the middle of "
            "a statement, until a SIGCONT; "
            "poison_record = recording any batch holding a reference that starts with "
            "POISON- fails with an error nobody foresaw. Refused in production."
        ),
    )


class MonitoringSection(BaseModel):
    """Logs, metrics and the audit trail."""

    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: LogFormat = Field(
        "json", description="json: one JSON object per line; text: mode's format, for a terminal."
    )
    audit_log: bool = Field(
        True, description="One payments.audit line per decision and per refused webhook."
    )
    enable_metrics: bool = True
    probe_cache_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description=(
            "How long /health and /metrics reuse a probe's result (0: every answer probes);"
            " callers during a probe share it."
        ),
    )
    metrics_port: int = Field(
        9090,
        ge=0,
        le=65535,
        description=(
            "A listener of the worker's own for GET /metrics (PORT serves it too); "
            "0: none, /metrics on PORT only."
        ),
    )


class WebhooksSection(BaseModel):
    """The webhook endpoints: secrets, guards and front processes."""

    webhooks_enabled: bool = Field(
        True,
        description=(
            "Whether the webhook endpoints take notices (false: 503 with Retry-After, nothing "
            "recorded; the worker's and the fronts'); /health says webhooks: disabled."
        ),
    )
    webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Default secrets (whsec_...), comma-separated: any may match (rotation).",
    )
    webhook_channel_secrets: dict[str, list[SecretStr]] = Field(
        default_factory=dict,
        description="From WEBHOOK_SECRET_<CHANNEL>; overrides the default for that channel.",
    )
    webhook_ip_allowlist: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list, description="CIDRs; empty allows every address."
    )
    webhook_rate_limit_per_source: float = Field(0, ge=0, description="Requests/s; 0 = off.")
    webhook_trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="CIDRs of proxies whose X-Forwarded-For names the client; empty trusts none.",
    )
    webhook_max_body_bytes: int = Field(64 * 1024, ge=1, description="Larger bodies get 413.")
    webhook_body_timeout_seconds: float = Field(
        10,
        gt=0,
        le=300,
        description="A body not read whole within this many seconds gets 408 (a slow sender).",
    )
    webhook_max_concurrent_requests: int = Field(
        1024,
        ge=1,
        description=(
            "Webhook requests one process (the worker, each front) works on at once;"
            " past it, 503 with Retry-After."
        ),
    )
    webhook_processes: int = Field(
        0,
        ge=0,
        le=32,
        description="Processes that also serve the webhook endpoints, on WEBHOOK_PORT (0: none).",
    )


class AccessSection(BaseModel):
    """Who may call the other endpoints (tokens, metrics allowlist); the fronts' WEBHOOK_PORT."""

    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Bearer tokens for stats and admin endpoints, comma-separated NAME:ROLE:SHA256 "
            "(ROLE viewer or operator; SHA256 the hex digest of the token; "
            "`python -m app tokens new NAME ROLE` makes one)."
        ),
    )
    metrics_token_required: bool = Field(
        False, description="GET /metrics needs a viewer token too (else only METRICS_ALLOWLIST)."
    )
    metrics_allowlist: Annotated[list[IPNetwork], NoDecode] = Field(
        default_factory=list,
        description="CIDRs that may read /metrics; empty allows every address.",
    )
    webhook_port: int | None = Field(
        None, ge=1, le=65535, description="The port the WEBHOOK_PROCESSES share (SO_REUSEPORT)."
    )


# The sections, last first: pydantic collects fields base by base from the end, so the variables
# keep the plan's order (and so do the error lines of an invalid configuration).
class Settings(
    AccessSection,
    WebhooksSection,
    MonitoringSection,
    PerformanceSection,
    ProcessingSection,
    KafkaSection,
    RedisSection,
    DatabaseSection,
    ServerSection,
    BaseSettings,
):
    """All configuration, validated at start. Field ``x_y`` is variable ``X_Y``."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=False,
        extra="ignore",
        env_ignore_empty=False,
    )

    @field_validator("log_level", "log_format", "node_env", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(*TLS_FILE_FIELDS, mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(*TLS_FILE_FIELDS)
    @classmethod
    def _tls_file_exists(cls, value: str | None) -> str | None:
        # Checked here so a wrong path stops the start with the variable's name, not a traceback
        # from deep inside the first client that loads it.
        if value is not None and not Path(value).is_file():
            raise ValueError("no such file (a PEM file is expected)")
        return value

    @field_validator("kafka_brokers", "allow_insecure", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("allow_insecure")
    @classmethod
    def _known_insecure(cls, names: list[str]) -> list[str]:
        names = [name.upper() for name in names]
        unknown = [name for name in names if name not in PRODUCTION_NEEDS]
        if unknown:
            raise ValueError(
                f"no such setting to allow: {', '.join(unknown)}; "
                f"use any of {', '.join(PRODUCTION_NEEDS)}"
            )
        return names

    @field_validator("kafka_brokers")
    @classmethod
    def _brokers_have_ports(cls, brokers: list[str]) -> list[str]:
        for broker in brokers:
            host, sep, port = broker.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"each broker must be host:port, got {broker!r}")
        return brokers

    @field_validator("api_tokens")
    @classmethod
    def _token_shape(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        names = set()
        for position, token in enumerate(tokens, 1):
            name, role, digest = [*token.get_secret_value().split(":"), "", "", ""][:3]
            if (
                not TOKEN_NAME.fullmatch(name)
                or role not in ROLES
                or not SHA256_HEX.fullmatch(digest)
                or token.get_secret_value().count(":") != 2
            ):
                raise ValueError(
                    f"entry {position} must be NAME:ROLE:SHA256 (ROLE one of {', '.join(ROLES)}, "
                    "SHA256 64 hex digits of the token)"
                )
            if name in names:
                raise ValueError(f"entry {position}: the name {name!r} is used twice")
            names.add(name)
        return tokens

    @field_validator(
        "webhook_ip_allowlist", "webhook_trusted_proxies", "metrics_allowlist", mode="before"
    )
    @classmethod
    def _networks(cls, value: Any) -> Any:
        value = _split_commas(value)
        if not isinstance(value, list):
            return value
        networks: list[IPNetwork] = []
        for item in value:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or CIDR") from None
        return networks

    @field_validator("webhook_secret", "api_tokens", mode="before")
    @classmethod
    def _secret_list(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return _split_commas(value)

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        return _check_webhook_secrets(secrets, "WEBHOOK_SECRET")

    @field_validator("webhook_channel_secrets", mode="before")
    @classmethod
    def _channel_secret_lists(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        parsed: dict[str, Any] = {}
        for channel, secrets in value.items():
            name = str(channel).lower()
            if not name or not set(name) <= CHANNEL_NAME_CHARS:
                raise ValueError(
                    f"{WEBHOOK_SECRET_PREFIX}{name.upper()}: a channel name uses "
                    "letters, digits, '_' and '-' only"
                )
            if name not in SECRET_CHANNELS:
                # Accepted silently, the real channel would fall back to WEBHOOK_SECRET.
                raise ValueError(
                    f"{WEBHOOK_SECRET_PREFIX}{name.upper()}: no channel {name!r}; channels: "
                    + ", ".join(sorted(SECRET_CHANNELS))
                )
            parsed[name] = _split_commas(secrets)
        return parsed

    @field_validator("webhook_channel_secrets")
    @classmethod
    def _channel_secret_shape(cls, value: dict[str, list[SecretStr]]) -> dict[str, list[SecretStr]]:
        for channel, secrets in value.items():
            _check_webhook_secrets(secrets, f"{WEBHOOK_SECRET_PREFIX}{channel.upper()}")
        return value

    @model_validator(mode="after")
    def _no_faults_in_production(self) -> Settings:
        if self.fault_point and self.node_env == "production":
            raise ValueError("FAULT_POINT is for tests and must be empty when NODE_ENV=production")
        return self

    @model_validator(mode="after")
    def _safe_in_production(self) -> Settings:
        if self.node_env != "production":
            return self
        unsafe = [name for name in self.unsafe_settings if name not in self.allow_insecure]
        if unsafe:
            # One line each (load_settings splits them); never a password's value.
            found = {
                "DB_SSLMODE": f"DB_SSLMODE={self.db_sslmode}",
                "KAFKA_SECURITY_PROTOCOL": (
                    f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                ),
                "REDIS_TLS": "REDIS_TLS=false",
                "WEBHOOK_SECRET": "WEBHOOK_SECRET is not set",
                "DB_PASSWORD": "DB_PASSWORD is the plan's sample password",
            }
            raise ValueError(
                "\n".join(
                    f"{found[name]}: NODE_ENV=production needs {PRODUCTION_NEEDS[name]} "
                    f"(ALLOW_INSECURE={name} accepts it on a trusted network)"
                    for name in unsafe
                )
            )
        return self

    @model_validator(mode="after")
    def _webhook_port(self) -> Settings:
        if self.webhook_processes and self.webhook_port is None:
            raise ValueError("WEBHOOK_PORT is required when WEBHOOK_PROCESSES is more than 0")
        if self.webhook_port == self.port:
            raise ValueError(f"WEBHOOK_PORT must differ from PORT ({self.port})")
        if self.metrics_port and self.metrics_port in (self.port, self.webhook_port):
            raise ValueError(
                f"METRICS_PORT ({self.metrics_port}) must differ from PORT and WEBHOOK_PORT "
                "(0: /metrics on PORT only)"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        if self.kafka_security_protocol == "SASL_SSL" and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with "
                "KAFKA_SECURITY_PROTOCOL=SASL_SSL"
            )
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError("KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE go together: set both")
        return self

    @model_validator(mode="after")
    def _date_window(self) -> Settings:
        # The window is [later of PAYMENT_DATE_MIN and retention's, now + max future]
        # (app/models.py DateWindow); retention's start is always in the past.
        latest = datetime.now(UTC) + timedelta(days=self.payment_date_max_future_days)
        if self.payment_date_min > latest.date():
            raise ValueError(
                f"PAYMENT_DATE_MIN ({self.payment_date_min}) is after the latest payment_date "
                f"accepted ({latest.date()}, now plus PAYMENT_DATE_MAX_FUTURE_DAYS="
                f"{self.payment_date_max_future_days:g}): every payment would be refused; "
                "set it to a past date"
            )
        return self

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min > self.db_pool_max:
            raise ValueError(
                f"DB_POOL_MIN ({self.db_pool_min}) must not exceed DB_POOL_MAX ({self.db_pool_max})"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = env_settings.env_vars if isinstance(env_settings, EnvSettingsSource) else {}
        environ = {name.lower(): value for name, value in environ.items()}
        return (
            init_settings,
            env_settings,
            _SecretFilesSource(settings_cls, environ),
            _ChannelSecretsSource(settings_cls, environ),
        )

    # Derived values ---------------------------------------------------------

    @property
    def unsafe_settings(self) -> list[str]:
        """The settings NODE_ENV=production would refuse as they are (PRODUCTION_NEEDS)."""
        unsafe = {
            "DB_SSLMODE": self.db_sslmode not in ("verify-ca", "verify-full"),
            "KAFKA_SECURITY_PROTOCOL": self.kafka_security_protocol == "PLAINTEXT",
            "REDIS_TLS": not self.redis_tls,
            "WEBHOOK_SECRET": not self.webhook_secret,
            "DB_PASSWORD": self.db_password.get_secret_value() == SAMPLE_DB_PASSWORD,
        }
        return [name for name, is_unsafe in unsafe.items() if is_unsafe]

    def secrets_for_channel(self, channel: str | None) -> list[SecretStr]:
        """The secrets a webhook on ``channel`` may be signed with (any one matches)."""
        if channel is not None and channel.lower() in self.webhook_channel_secrets:
            return self.webhook_channel_secrets[channel.lower()]
        return self.webhook_secret

    @property
    def database_dsn(self) -> str:
        """A DSN without the password (asyncpg takes it separately; DSNs get logged)."""
        return f"postgresql://{self.db_username}@{self.db_host}:{self.db_port}/{self.db_database}"

    @property
    def kafka_url(self) -> str:
        """The broker list in Faust's ``kafka://host:port;host:port`` form."""
        return "kafka://" + ";".join(self.kafka_brokers)


def _describe(error: Mapping[str, Any], settings_cls: type[Settings]) -> str:
    location = [str(part) for part in error.get("loc", ())]
    field = location[0] if location else ""
    if field == "webhook_channel_secrets":
        # Its validators name the WEBHOOK_SECRET_<CHANNEL> variable in the message itself.
        return str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    elif field in settings_cls.model_fields:
        variable = field.upper()
    else:
        variable = "configuration"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    field_info = settings_cls.model_fields.get(field)
    secret = field in SECRET_FIELDS or (
        field_info is not None and "Secret" in str(field_info.annotation)
    )
    if message.startswith(variable):
        return message  # it names the variable itself (and which of its secrets)
    if "\n" in message:  # several problems, one line each
        return "\n".join(f"{variable}: {line}" for line in message.splitlines())
    if secret or field == "webhook_channel_secrets" or "input" not in error:
        return f"{variable}: {message}"
    given = error["input"]
    if isinstance(given, str | int | float | bool):
        return f"{variable}={given!r}: {message}"
    return f"{variable}: {message}"


def load_settings() -> Settings:
    """Read and validate the configuration from the environment, or raise :class:`SettingsError`.

    The error's message has one line per bad variable, naming it, and never a
    secret's value.
    """
    try:
        return Settings()
    except ValidationError as exc:
        described = (_describe(error, Settings) for error in exc.errors())
        lines = sorted({line for text in described for line in text.splitlines()})
        raise SettingsError("\n".join(lines)) from None
