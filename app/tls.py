"""Encrypted connections: the TLS and SASL options of every client, built from the settings.

Every client the service opens (asyncpg, Faust's and our own aiokafka clients,
redis-py) takes its security options from here and nowhere else, so one setting
turns TLS on for all of them. With the settings unset the options are today's:
plaintext Kafka and Redis, and libpq's ``prefer`` for Postgres.

A certificate that fails verification is a configuration problem, not an outage:
:func:`rejected` turns it into :class:`CertificateRejected`, whose message names
the CA setting (or the host setting, for a name the certificate does not hold).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

import faust
from redis.asyncio.connection import SSLConnection

from app.exceptions import CertificateRejected
from app.settings import Settings

#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
NAME_MISMATCH_CODES = frozenset({62, 64})

#: How long the handshake that explains a failed Kafka bootstrap may take.
DIAGNOSIS_TIMEOUT_SECONDS = 5.0


def verified_context(
    ca_file: str | None,
    *,
    check_hostname: bool = True,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client context that requires a certificate signed by ``ca_file`` (or the system CAs)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


# --- Postgres -----------------------------------------------------------------------


def postgres_ssl(settings: Settings) -> ssl.SSLContext | str:
    """asyncpg's ``ssl`` argument for DB_SSLMODE.

    verify-ca and verify-full get a context that checks the certificate against
    DB_SSL_ROOT_CERT (verify-full also the host name); the other modes keep
    libpq's meaning, which asyncpg implements for the mode's name.
    """
    mode = settings.db_sslmode
    if mode in ("verify-ca", "verify-full"):
        return verified_context(settings.db_ssl_root_cert, check_hostname=mode == "verify-full")
    return mode


# --- Kafka ----------------------------------------------------------------------------


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The context for KAFKA_SECURITY_PROTOCOL=SSL/SASL_SSL (None for PLAINTEXT)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    return verified_context(
        settings.kafka_ssl_ca_file,
        cert_file=settings.kafka_ssl_cert_file,
        key_file=settings.kafka_ssl_key_file,
    )


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for every aiokafka client we build ourselves."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol == "PLAINTEXT":
        return options
    options["ssl_context"] = kafka_ssl_context(settings)
    if protocol == "SASL_SSL":
        assert settings.kafka_sasl_password is not None  # Settings requires it with SASL_SSL
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def faust_credentials(settings: Settings) -> faust.SSLCredentials | faust.SASLCredentials | None:
    """Faust's ``broker_credentials``: the same security for its consumer and producer."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # Settings requires it with SASL_SSL
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


async def kafka_certificate_rejected(settings: Settings) -> CertificateRejected | None:
    """Why TLS to the brokers fails, when a certificate is the reason; else None.

    aiokafka logs a failed handshake and raises only "Unable to bootstrap", so
    after a failed start we repeat the handshake ourselves to say what to check.
    """
    context = kafka_ssl_context(settings)
    if context is None:
        return None
    for broker in settings.kafka_brokers:
        host, _, port = broker.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), ssl=context),
                DIAGNOSIS_TIMEOUT_SECONDS,
            )
        except ssl.SSLCertVerificationError as exc:
            return rejected("Kafka", broker, exc, "KAFKA_SSL_CA_FILE", "KAFKA_BROKERS")
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None


# --- Redis ------------------------------------------------------------------------------


class VerifiedSSLConnection(SSLConnection):
    """redis-py's TLS connection, whose connect error names the setting to check."""

    def _error_message(self, exception: BaseException) -> str:
        message: str = super()._error_message(exception)
        if isinstance(exception, ssl.SSLCertVerificationError):
            message += " " + advice(exception, "REDIS_TLS_CA_FILE", "REDIS_HOST")
        return message


def redis_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for a redis-py connection pool: AUTH, and TLS with REDIS_TLS."""
    options: dict[str, Any] = {}
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    if settings.redis_tls:
        options.update(
            connection_class=VerifiedSSLConnection,
            ssl_ca_certs=settings.redis_tls_ca_file,
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
        )
    return options


# --- certificate errors -------------------------------------------------------------------


def advice(exc: ssl.SSLCertVerificationError, ca_setting: str, host_setting: str) -> str:
    """What to check for a failed verification: the CA setting, or the host name."""
    if exc.verify_code in NAME_MISMATCH_CODES:
        return (
            f"The certificate does not name the host: {host_setting} must be a name "
            "(or IP address) the server's certificate holds."
        )
    return (
        f"Check {ca_setting}: it must name the CA file that signed the server's certificate "
        "(unset: the system's CAs)."
    )


def rejected(
    service: str, where: str, exc: ssl.SSLCertVerificationError, ca_setting: str, host_setting: str
) -> CertificateRejected:
    """The error for a server certificate that failed verification."""
    reason = (exc.verify_message or str(exc)).rstrip(".")
    return CertificateRejected(
        f"{service} at {where}: TLS certificate verification failed ({reason}). "
        + advice(exc, ca_setting, host_setting)
    )


def certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (itself, its cause or context)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
