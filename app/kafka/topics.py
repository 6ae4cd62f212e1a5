"""The service's Kafka topics by name, and the partition counts the code relies on.

scripts/kafka/topics.conf creates them; a unit test keeps the two in agreement.
"""

from __future__ import annotations

#: Raw records from both inputs, keyed by reference_number.
INTAKE = "payment.intake"
#: Records that could not be recorded, with a reason code.
DLQ = "payment.intake.dlq"
#: PaymentRecordedEvent, keyed by loan_account_number. The name is KAFKA_TOPIC (default below).
EVENTS_DEFAULT = "payment.events"

#: The intake topic and the record agent's table changelog must share this count.
INTAKE_PARTITIONS = 12
EVENTS_PARTITIONS = 12
DLQ_PARTITIONS = 3


def required_topics(events_topic: str) -> frozenset[str]:
    """The topics a worker cannot run without."""
    return frozenset({INTAKE, DLQ, events_topic})
