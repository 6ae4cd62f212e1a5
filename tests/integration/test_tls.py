"""The service over TLS: a stack of its own with STACK_TLS=1, and what each side refuses.

The module starts its own TLS stack (scripts/stack with STACK_TLS=1, its own
state folder and free ports) and wipes it at the end. The worker records a
staged payment over TLS to all three servers; each server refuses plaintext; and
each of the service's client factories refuses a server whose certificate comes
from another CA, or names another host, with a message naming what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from redis.exceptions import ConnectionError as RedisConnectionError

from app.exceptions import CertificateRejected
from app.kafka.probe import KafkaProbe
from app.kafka.publisher import Publisher
from app.kafka.topic_reader import TopicReader
from app.settings import Settings
from app.storage import database
from app.storage.redis_connection import RedisConnection
from tests.pipeline import STAGING_COLUMNS, app_env, make_load, run_id
from tests.stack import Stack, native_tls_stack, run_script, run_worker, wait_for


@dataclass(frozen=True)
class TlsStack:
    """The running TLS stack, and the folder of its CA."""

    stack: Stack
    tls_dir: Path

    @property
    def tls_env(self) -> dict[str, str]:
        """What `scripts/stack env` printed beyond the endpoints: the TLS settings."""
        return dict(self.stack.client_env)

    def settings(self, **overrides: Any) -> Settings:
        return self.stack.settings(startup_timeout_seconds=20, **overrides)


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    if os.environ.get("TEST_STACK", "native") != "native":
        pytest.skip("starts a native TLS stack through scripts/stack")
    state = tmp_path_factory.mktemp("tls-stack")
    with native_tls_stack(
        state, REDIS_PASSWORD=secrets.token_hex(8), KAFKA_SASL_PASSWORD=secrets.token_hex(8)
    ) as stack:
        yield TlsStack(stack, state / "tls")


def test_stack_env_points_every_client_at_tls(tls_stack: TlsStack) -> None:
    env = tls_stack.tls_env
    ca = str(tls_stack.tls_dir / "ca.crt")
    assert env["DB_SSLMODE"] == "verify-full"
    assert env["DB_SSL_ROOT_CERT"] == env["REDIS_TLS_CA_FILE"] == env["KAFKA_SSL_CA_FILE"] == ca
    assert env["REDIS_TLS"] == "true"
    assert env["REDIS_PASSWORD"] == tls_stack.stack.script_env["REDIS_PASSWORD"]
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["KAFKA_SASL_PASSWORD"] == tls_stack.stack.script_env["KAFKA_SASL_PASSWORD"]


# --- the service over TLS ---------------------------------------------------------------


async def _stage(settings: Settings, rows: list[tuple[Any, ...]]) -> bool:
    """COPY rows into payment_staging over TLS; whether the connection was encrypted."""
    connection = await database.connect(settings)
    try:
        encrypted = await connection.fetchval(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        await connection.copy_records_to_table(
            "payment_staging", schema_name="public", columns=STAGING_COLUMNS, records=rows
        )
    finally:
        await connection.close()
    return bool(encrypted)


async def _recorded(settings: Settings, references: list[str]) -> int:
    connection = await database.connect(settings)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM payment_service.payments WHERE reference_number = ANY($1)",
            references,
        )
    finally:
        await connection.close()
    return int(count)


async def _events_naming(settings: Settings, references: set[str]) -> set[str]:
    """The references of payment.recorded events on payment.events (read over TLS)."""
    found: set[str] = set()
    async with TopicReader(settings, "test-tls") as reader:
        partitions = await reader.partitions(settings.kafka_topic)
        async for message in reader.read(await reader.bounds(partitions)):
            reference = json.loads(message.value)["payment"]["reference_number"]
            if reference in references:
                found.add(reference)
    return found


def test_a_worker_records_a_staged_payment_over_tls(tls_stack: TlsStack, tmp_path: Path) -> None:
    run = run_id()
    load = make_load(3, f"TLS{run}", duplicate_rate=0, conflict_rate=0, invalid_rate=0)
    references = [row[0] for row in load.rows]
    settings = tls_stack.settings()
    assert asyncio.run(_stage(settings, load.rows)), "the staging connection was not encrypted"
    env = app_env(run)
    with run_worker(tls_stack.stack, tmp_path, **env) as worker:

        def healthy() -> bool:
            worker.assert_alive()
            try:
                status, body = worker.get("/health", timeout=5)
            except OSError:
                return False
            return status == 200 and json.loads(body)["status"] == "healthy"

        wait_for(healthy, timeout=120, what="/health to answer healthy over TLS")
        wait_for(
            lambda: asyncio.run(_recorded(settings, references)) == len(references),
            timeout=120,
            what="the staged payments to be recorded",
        )
        wait_for(
            lambda: asyncio.run(_events_naming(settings, set(references))) == set(references),
            timeout=60,
            what="a payment.recorded event per payment",
        )
        assert "CERTIFICATE_VERIFY_FAILED" not in worker.log()


# --- each server refuses plaintext -------------------------------------------------------


async def test_postgres_refuses_plaintext(tls_stack: TlsStack) -> None:
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(**tls_stack.stack.db_connect_kwargs(), ssl=False, timeout=10)


async def test_redis_refuses_plaintext(tls_stack: TlsStack) -> None:
    client = redis.Redis(
        host=tls_stack.stack.redis_host,
        port=tls_stack.stack.redis_port,
        password=tls_stack.tls_env["REDIS_PASSWORD"],
        socket_timeout=5,
        socket_connect_timeout=5,
    )
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()


async def test_kafka_refuses_a_plaintext_client(tls_stack: TlsStack) -> None:
    client = AIOKafkaClient(
        bootstrap_servers=tls_stack.stack.kafka_bootstrap, request_timeout_ms=5000
    )
    try:
        with pytest.raises(KafkaConnectionError):
            await client.bootstrap()
    finally:
        await client.close()


async def test_kafka_refuses_a_wrong_password(tls_stack: TlsStack) -> None:
    probe = KafkaProbe(tls_stack.settings(kafka_sasl_password="not-the-password"))
    await probe.start()
    try:
        with pytest.raises(KafkaConnectionError):
            await probe.check()
    finally:
        await probe.stop()


# --- each client refuses a certificate it cannot verify -----------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second CA, which signed none of the stack's certificates."""
    folder = tmp_path_factory.mktemp("other-ca")
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2",
        "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=another CA",
        cwd=folder,
    )  # fmt: skip
    return str(folder / "ca.crt")


async def _redis_ping(settings: Settings) -> None:
    connection = RedisConnection(settings)
    await connection.start()
    try:
        await connection.client.ping()
    finally:
        await connection.stop()


async def _kafka_probe(settings: Settings) -> None:
    probe = KafkaProbe(settings)
    await probe.start()
    try:
        await probe.check()
    finally:
        await probe.stop()


async def _publisher(settings: Settings) -> None:
    publisher = Publisher(settings)
    try:
        await publisher.start()
    finally:
        await publisher.stop()


async def test_postgres_certificate_from_another_ca_is_refused(
    tls_stack: TlsStack, other_ca: str
) -> None:
    settings = tls_stack.settings(db_ssl_root_cert=other_ca)
    with pytest.raises(CertificateRejected, match="DB_SSL_ROOT_CERT") as refused:
        await database.connect(settings)
    assert "unable to get local issuer certificate" in str(refused.value)
    started = time.monotonic()
    with pytest.raises(CertificateRejected, match="Check DB_SSL_ROOT_CERT"):
        await database.connect_pool(settings)
    # A certificate that fails now fails on every retry: the pool does not wait its timeout out.
    assert time.monotonic() - started < settings.startup_timeout_seconds / 2


async def test_redis_certificate_from_another_ca_is_refused(
    tls_stack: TlsStack, other_ca: str
) -> None:
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED") as refused:
        await _redis_ping(tls_stack.settings(redis_tls_ca_file=other_ca))
    assert "Check REDIS_TLS_CA_FILE" in str(refused.value)


async def test_kafka_certificate_from_another_ca_is_refused(
    tls_stack: TlsStack, other_ca: str
) -> None:
    settings = tls_stack.settings(kafka_ssl_ca_file=other_ca)
    with pytest.raises(CertificateRejected, match="Check KAFKA_SSL_CA_FILE"):
        await _kafka_probe(settings)
    with pytest.raises(CertificateRejected, match="Check KAFKA_SSL_CA_FILE"):
        await _publisher(settings)


# --- a certificate for another name ------------------------------------------------------


class WrongNameServer:
    """A TLS server on loopback whose certificate (from the stack's CA) names another host.

    It answers Postgres's SSLRequest with 'S' first, so asyncpg gets as far as the
    handshake too; every handshake is then left to fail on the client's side.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            with connection, contextlib.suppress(OSError):
                connection.settimeout(5)
                first = connection.recv(1, socket.MSG_PEEK)
                if first and first[0] != 0x16:  # not a TLS handshake: Postgres's SSLRequest
                    connection.recv(8)
                    connection.sendall(b"S")
                with self._context.wrap_socket(connection, server_side=True):
                    pass

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def wrong_name_server(tls_stack: TlsStack) -> Iterator[WrongNameServer]:
    folder = tls_stack.tls_dir.parent / "wrong-name"
    folder.mkdir(exist_ok=True)
    ca = tls_stack.tls_dir
    _openssl(
        "req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=payments.example",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=DNS:payments.example\n")
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca / "ca.crt"), "-CAkey",
        str(ca / "ca.key"), "-CAcreateserial", "-CAserial", "ca.srl", "-days", "2",
        "-extfile", "server.ext", "-out", "server.crt",
        cwd=folder,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    server = WrongNameServer(context)
    try:
        yield server
    finally:
        server.close()


async def test_a_certificate_for_another_host_is_refused_by_every_client(
    tls_stack: TlsStack, wrong_name_server: WrongNameServer
) -> None:
    port = wrong_name_server.port
    settings = tls_stack.settings(
        db_port=port, redis_port=port, kafka_brokers=[f"127.0.0.1:{port}"]
    )
    with pytest.raises(CertificateRejected, match="DB_HOST must be a name") as refused:
        await database.connect(settings)
    assert "IP address mismatch" in str(refused.value)
    with pytest.raises(RedisConnectionError, match="REDIS_HOST must be a name"):
        await _redis_ping(settings)
    with pytest.raises(CertificateRejected, match="KAFKA_BROKERS must be a name"):
        await _kafka_probe(settings)


# --- a state folder keeps its mode ---------------------------------------------------------


def test_a_state_folder_keeps_the_mode_it_was_made_in(tls_stack: TlsStack, tmp_path: Path) -> None:
    plain_on_tls = run_script({**os.environ, **tls_stack.stack.script_env, "STACK_TLS": "0"}, "up")
    assert plain_on_tls.returncode == 1
    assert "holds a TLS stack: set STACK_TLS=1" in plain_on_tls.stderr
    (tmp_path / "kafka" / "data").mkdir(parents=True)
    (tmp_path / "kafka" / "data" / "meta.properties").touch()
    tls_on_plain = run_script(
        {**os.environ, "PAYMENTS_STATE_DIR": str(tmp_path), "STACK_TLS": "1"}, "up"
    )
    assert tls_on_plain.returncode == 1
    assert "holds a plaintext stack" in tls_on_plain.stderr
    assert not (tmp_path / "tls").exists()
