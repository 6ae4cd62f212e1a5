"""Metrics: exposition, and counts of several processes summed (prometheus-client multiprocess)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

from faust.sensors.prometheus import FaustMetrics
from faust.types import TP
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from app.instruments import DECISIONS, LeanMonitor, exposition, gauge
from web.metrics import _listed

ROOT = Path(__file__).resolve().parents[2]


def values(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_exposition_has_the_counters_and_the_measured_gauges() -> None:
    created = (
        "payments_decisions_total",
        frozenset({("source", "staging"), ("outcome", "created")}),
    )
    before = values(exposition([]).decode()).get(created, 0.0)
    DECISIONS.labels("staging", "created").inc(3)
    text = exposition([gauge("payments_staging_backlog", "rows", 42)]).decode()
    assert values(text)[created] == before + 3
    assert values(text)[("payments_staging_backlog", frozenset())] == 42


def _python(code: str, folder: Path | None) -> str:
    """``code``'s output in a new process: multiprocess mode in ``folder``, or single-process."""
    multiprocess = {} if folder is None else {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**multiprocess, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_counts_of_the_worker_and_its_fronts_are_summed(tmp_path: Path) -> None:
    for count in (2, 5):  # two processes, e.g. two fronts, one after the other
        _python(
            f"from app.instruments import WEBHOOK_SECONDS as h; "
            f"[h.labels('201').observe(0.01) for _ in range({count})]",
            tmp_path,
        )
    text = _python(
        "from app.instruments import exposition; print(exposition([]).decode())", tmp_path
    )
    key = ("payments_webhook_duration_seconds_count", frozenset({("status", "201")}))
    assert values(text)[key] == 7


def test_an_ipv4_mapped_peer_matches_an_ipv4_metrics_allowlist() -> None:
    networks = [ipaddress.ip_network("10.0.0.0/8")]
    assert _listed("::ffff:10.1.2.3", networks)
    assert _listed("10.1.2.3", networks)
    assert not _listed("::ffff:192.0.2.1", networks)
    assert not _listed(None, networks)


def test_the_alerts_counters_are_exported_at_zero_from_the_start() -> None:
    from app.service import create_app
    from app.settings import Settings

    create_app(Settings(), store="memory://")
    found = values(exposition([]).decode())
    for name, labels in (
        ("payments_intake_records_lost_total", {"topic": "payment.intake"}),
        ("payments_dead_letters_total", {"reason": "unprocessable"}),
        ("payments_redis_unavailable_total", {"operation": "claim"}),
        ("payments_kafka_messages_total", {"topic": "payment.events", "result": "failed"}),
        ("payments_webhook_duration_seconds_count", {"status": "503"}),
        ("payments_webhook_duration_seconds_count", {"status": "408"}),
    ):
        assert (name, frozenset(labels.items())) in found, name


REBALANCE = """
import types, warnings
warnings.simplefilter("error")  # prometheus-client warns where it cannot remove a sample
from app.instruments import exposition, faust_monitor
monitor = faust_monitor()
tp = types.SimpleNamespace(topic="payment.intake", partition=0)
monitor.on_message_in(tp, 0, None)
monitor.on_rebalance_start(types.SimpleNamespace(rebalancing_count=1))
monitor.on_message_in(tp, 1, None)
print(exposition([]).decode())
"""

RECEIVED = (
    "payments_faust_messages_received_per_topic_total",
    frozenset({("topic", "payment.intake")}),
)


def test_a_rebalance_in_multiprocess_mode_warns_nothing_and_counts_on(tmp_path: Path) -> None:
    text = _python(REBALANCE, tmp_path)  # check=True: a warning would have raised

    assert values(text)[RECEIVED] == 2


def test_a_rebalance_in_one_process_drops_the_samples_and_counts_again() -> None:
    text = _python(REBALANCE, None)

    # The sample dropped at the rebalance comes back with the next message (the
    # monitor's cached child for the topic went with it).
    assert values(text)[RECEIVED] == 1


class CountingGauge:
    """Stands in for one labelled gauge; keeps every value set."""

    def __init__(self) -> None:
        self.values: list[tuple[str, int, float]] = []

    def labels(self, topic: str, partition: int) -> Any:
        gauge = self

        class Child:
            def set(self, value: float) -> None:
                gauge.values.append((topic, partition, value))

        return Child()


def test_a_partitions_end_offset_is_set_when_it_moves_not_per_message() -> None:
    gauge = CountingGauge()
    metrics = FaustMetrics.create(CollectorRegistry(), "end_offsets")._replace(
        topic_partition_end_offset=gauge  # type: ignore[arg-type]
    )
    monitor = LeanMonitor(metrics)
    intake = TP("payment.intake", 0)

    for end in (100, 100, 100, 250, 250):  # Faust calls it per message, with the fetch's end
        monitor.track_tp_end_offset(intake, end)
    monitor.track_tp_end_offset(TP("payment.intake", 1), 100)

    assert gauge.values == [
        ("payment.intake", 0, 100),
        ("payment.intake", 0, 250),
        ("payment.intake", 1, 100),
    ]
    assert monitor.tp_end_offsets[intake] == 250  # Faust's own bookkeeping still follows
