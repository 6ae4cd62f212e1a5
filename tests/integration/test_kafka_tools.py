"""The bin/ wrappers the docs name run Kafka's own tools against the stack."""

from __future__ import annotations

from tests.stack import Stack


def test_kafka_configs_describes_a_topics_settings(native: Stack) -> None:
    described = native.tool(
        "kafka-configs",
        "--bootstrap-server",
        native.kafka_bootstrap,
        "--describe",
        "--entity-type",
        "topics",
        "--entity-name",
        "payment.intake.dlq",
    )
    assert described.returncode == 0, described.stderr
    assert "retention.ms=2592000000" in described.stdout  # scripts/kafka/topics.conf


def test_kafka_delete_records_is_kafkas_tool(native: Stack) -> None:
    usage = native.tool("kafka-delete-records", "--help")
    assert "--offset-json-file" in usage.stdout + usage.stderr
