"""Which TLS and SASL options each combination of settings gives every client (offline)."""

from __future__ import annotations

import ssl

import faust
import pytest

from app import tls
from app.exceptions import CertificateRejected, SettingsError
from app.settings import Settings, load_settings


@pytest.fixture(scope="module")
def ca_file() -> str:
    """A CA file any SSLContext loads: the system bundle (no certificate is ever checked here)."""
    paths = ssl.get_default_verify_paths()
    if not paths.cafile:
        pytest.skip("no system CA bundle to load")
    return paths.cafile


def test_defaults_are_plaintext_and_libpq_prefer() -> None:
    settings = Settings()
    assert tls.postgres_ssl(settings) == "prefer"
    assert tls.kafka_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert tls.kafka_ssl_context(settings) is None
    assert tls.faust_credentials(settings) is None
    assert tls.redis_options(settings) == {}


@pytest.mark.parametrize("mode", ["disable", "prefer", "require"])
def test_postgres_modes_without_verification_pass_the_mode(mode: str) -> None:
    assert tls.postgres_ssl(Settings(db_sslmode=mode)) == mode


def test_postgres_verify_full_checks_the_ca_and_the_host(ca_file: str) -> None:
    context = tls.postgres_ssl(Settings(db_sslmode="verify-full", db_ssl_root_cert=ca_file))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_postgres_verify_ca_checks_the_ca_only(ca_file: str) -> None:
    context = tls.postgres_ssl(Settings(db_sslmode="verify-ca", db_ssl_root_cert=ca_file))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False


@pytest.mark.parametrize(
    "variable",
    [
        "DB_SSL_ROOT_CERT",
        "KAFKA_SSL_CA_FILE",
        "KAFKA_SSL_CERT_FILE",
        "KAFKA_SSL_KEY_FILE",
        "REDIS_TLS_CA_FILE",
    ],
)
def test_a_missing_tls_file_is_named_at_start(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "/nonexistent/ca.crt")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"{variable}='/nonexistent/ca.crt': no such file" in str(caught.value)


def test_an_empty_tls_file_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SSL_CA_FILE", "")
    assert load_settings().kafka_ssl_ca_file is None


def test_kafka_ssl(ca_file: str) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=ca_file)
    options = tls.kafka_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    credentials = tls.faust_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.context.check_hostname is True


def test_kafka_sasl_ssl(ca_file: str) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_ca_file=ca_file,
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="payments",
        kafka_sasl_password="s3cret",
    )
    options = tls.kafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert options["sasl_plain_username"] == "payments"
    assert options["sasl_plain_password"] == "s3cret"
    assert options["ssl_context"].check_hostname is True
    credentials = tls.faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("payments", "s3cret")
    assert credentials.ssl_context is not None
    assert "s3cret" not in repr(credentials)


def test_redis_password_alone_keeps_plaintext() -> None:
    assert tls.redis_options(Settings(redis_password="pw")) == {"password": "pw"}


def test_redis_tls_verifies_the_certificate_and_the_host(ca_file: str) -> None:
    options = tls.redis_options(
        Settings(redis_tls=True, redis_tls_ca_file=ca_file, redis_password="pw")
    )
    assert options == {
        "password": "pw",
        "connection_class": tls.VerifiedSSLConnection,
        "ssl_ca_certs": ca_file,
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def _verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code = code
    error.verify_message = message
    return error


def test_an_unknown_ca_names_the_ca_setting() -> None:
    error = _verification_error(20, "unable to get local issuer certificate")
    rejected = tls.rejected("Redis", "127.0.0.1:6379", error, "REDIS_TLS_CA_FILE", "REDIS_HOST")
    assert isinstance(rejected, CertificateRejected)
    assert not rejected.retriable
    assert "unable to get local issuer certificate" in str(rejected)
    assert "Check REDIS_TLS_CA_FILE" in str(rejected)


def test_a_name_mismatch_names_the_host_setting() -> None:
    error = _verification_error(62, "Hostname mismatch, certificate is not valid for 'db'.")
    rejected = tls.rejected("Postgres", "db:5432/x", error, "DB_SSL_ROOT_CERT", "DB_HOST")
    assert "DB_HOST must be a name" in str(rejected)


def test_certificate_error_is_found_behind_a_wrapper() -> None:
    error = _verification_error(20, "unable to get local issuer certificate")
    wrapper = ConnectionError("wrapped")
    wrapper.__cause__ = error
    outer = RuntimeError("outer")
    outer.__context__ = wrapper
    assert tls.certificate_error(outer) is error
    assert tls.certificate_error(ValueError("no")) is None
