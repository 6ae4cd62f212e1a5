"""ops/grafana/payment-service.json: a dashboard Grafana imports as it is, with the plan's panels.

tests/integration/test_prometheus.py evaluates its expressions in a real Prometheus.
"""

from __future__ import annotations

import json
from typing import Any

from tests.stack import ROOT

DASHBOARD = ROOT / "ops" / "grafana" / "payment-service.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_it_asks_for_its_prometheus_data_source_on_import() -> None:
    board = dashboard()
    assert board["__inputs"] == [
        {
            "name": "DS_PROMETHEUS",
            "label": "Prometheus",
            "description": "The Prometheus that scrapes the workers' /metrics",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    assert board["id"] is None
    assert board["uid"] == "payment-service"
    for panel in board["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert [target["datasource"] for target in panel["targets"]] == [DATASOURCE] * len(
            panel["targets"]
        )
        assert [target["refId"] for target in panel["targets"]] == [
            chr(65 + n) for n in range(len(panel["targets"]))
        ]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def test_it_has_the_plans_key_metrics() -> None:
    exprs = "\n".join(
        target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]
    )
    for needed in (
        "rate(payments_staging_rows_total",  # staging rate
        "payments_staging_backlog",
        "histogram_quantile(0.5, sum by (le, status)",  # webhook p50/p95/p99 by status
        "histogram_quantile(0.95, sum by (le, status)",
        "histogram_quantile(0.99, sum by (le, status)",
        'payments_decisions_total{outcome="duplicate"}',  # duplicate rate
        'payments_kafka_messages_total{result="ok"}',  # publish success rate
        "payments_db_pool_in_use",
        "payments_cache_requests_total",  # hit rates per layer
        "payments_consumer_lag",
        "payments_outbox_oldest_age_seconds",
        "sum by (reason) (rate(payments_dead_letters_total",
        "payments_partition_bytes",
    ):
        assert needed in exprs, needed
