"""The service's error tree: one root, a small class per failure, policy on the class."""

from __future__ import annotations


class PaymentsError(Exception):
    """Root of every error this service raises on purpose."""

    #: True when the same operation may succeed if tried again later.
    retriable: bool = False


class SettingsError(PaymentsError):
    """The configuration is invalid; the message names each bad variable, one per line."""


class DependencyUnavailable(PaymentsError):
    """A backing service (Postgres, Kafka, Redis) did not answer; try again later."""

    retriable = True


class CertificateRejected(DependencyUnavailable):
    """A server's TLS certificate failed verification; the message names the setting to check."""

    # A wrong CA or host name stays wrong until the configuration changes.
    retriable = False


class MigrationError(PaymentsError):
    """A migration failed or an applied migration was edited after it ran."""


class RecordsRefused(PaymentsError):
    """Postgres refused what a batch holds (a constraint, a value): retrying cannot help."""


class UndecodableRecord(PaymentsError):
    """Bytes on the intake topic that are not a JSON record at all; they go to the DLQ."""


class PublishFailed(PaymentsError):
    """Kafka did not acknowledge a publish; nothing may be marked done until it does."""

    retriable = True


class CommandError(PaymentsError):
    """An operator command was asked for something it cannot do; the message says what to change."""
