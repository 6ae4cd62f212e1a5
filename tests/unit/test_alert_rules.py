"""ops/alerts.yml: valid for Prometheus, and each alert fires and stays quiet when it should."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "alerts.yml"
PROMTOOL = shutil.which("promtool")


def promtool(*args: str) -> str:
    # scripts/bootstrap installs Debian's prometheus package for promtool.
    assert PROMTOOL is not None, "promtool is missing: run scripts/bootstrap"
    done = subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, cwd=ROOT / "ops", check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 14 rules found" in promtool("check", "rules", "alerts.yml")


def test_each_alert_fires_and_stays_quiet_as_expected() -> None:
    promtool("test", "rules", "alerts_test.yml")


def test_every_alert_is_tested_both_ways_and_has_a_runbook_section() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((ROOT / "ops" / "alerts_test.yml").read_text())["tests"]
    names = {rule["alert"] for rule in rules}
    # Every group but the quiet one fires its alerts (an alert whose series would disturb
    # another's figures fires in a group of its own).
    cases = {
        group["name"]: {case["alertname"] for case in group["alert_rule_test"]} for group in tests
    }
    quiet = cases.pop("quiet just inside the limits")
    firing = set().union(*cases.values())
    assert names == firing == quiet
    guide = (ROOT / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9]", "", line.lower())
        for line in guide.splitlines()
        if line.startswith("#")
    }
    for rule in rules:
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, (
            f"docs/operations.md has no section {rule['alert']}"
        )
    # the metrics the rules read are the ones the service exports
    exported = set(
        re.findall(r'"(payments_[a-z_]+)"', (ROOT / "app" / "instruments.py").read_text())
    )
    exported |= set(re.findall(r'"(payments_[a-z_]+)"', (ROOT / "web" / "metrics.py").read_text()))
    used = set(re.findall(r"payments_[a-z_]+", RULES.read_text()))
    series = {f"_{suffix}" for suffix in ("bucket", "count", "sum")}  # a histogram's series
    histograms = {
        name.removesuffix(suffix) for name in used for suffix in series if name.endswith(suffix)
    }
    assert (used - {h + suffix for h in histograms for suffix in series}) | histograms <= exported
