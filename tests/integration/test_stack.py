"""The local stack: topics and their partitions, kcat, an idempotent `up`, a stack from nothing."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.stack import ROOT, Stack, free_port, free_ports, read_topics_conf, run_script


def partition_counts(stack: Stack) -> dict[str, int]:
    result = stack.tool("kafka-topics", "--bootstrap-server", stack.kafka_bootstrap, "--describe")
    assert result.returncode == 0, result.stderr
    return {
        match["name"]: int(match["count"])
        for match in re.finditer(
            r"Topic: (?P<name>\S+)\s+TopicId: \S+\s+PartitionCount: (?P<count>\d+)", result.stdout
        )
    }


def test_the_wrapper_lists_the_three_topics_with_their_partitions(native: Stack) -> None:
    listed = native.tool("kafka-topics", "--bootstrap-server", native.kafka_bootstrap, "--list")
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert {"payment.intake", "payment.events", "payment.intake.dlq"} <= names
    counts = partition_counts(native)
    assert counts["payment.intake"] == 12
    assert counts["payment.events"] == 12
    assert counts["payment.intake.dlq"] == 3


def test_topic_settings_come_from_topics_conf(native: Stack) -> None:
    result = native.tool(
        "kafka-topics",
        "--bootstrap-server",
        native.kafka_bootstrap,
        "--describe",
        "--topic",
        "payment.intake.dlq",
    )
    expected = read_topics_conf()["payment.intake.dlq"][1]
    for key, value in expected.items():
        assert f"{key}={value}" in result.stdout


def test_kcat_produces_and_consumes(native: Stack) -> None:
    topic = f"selftest-{uuid.uuid4().hex[:12]}"
    created = native.tool(
        "kafka-topics",
        "--bootstrap-server",
        native.kafka_bootstrap,
        "--create",
        "--topic",
        topic,
        "--partitions",
        "1",
        "--replication-factor",
        "1",
    )
    assert created.returncode == 0, created.stderr
    try:
        lines = [f"ref-{i}:payload {i}" for i in range(5)]
        produced = subprocess.run(
            ["kcat", "-b", native.kafka_bootstrap, "-t", topic, "-P", "-K", ":"],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert produced.returncode == 0, produced.stderr
        consumed = subprocess.run(
            [
                "kcat",
                "-b",
                native.kafka_bootstrap,
                "-t",
                topic,
                "-C",
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k=%s\n",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert consumed.returncode == 0, consumed.stderr
        assert consumed.stdout.splitlines() == [f"ref-{i}=payload {i}" for i in range(5)]
    finally:
        native.tool(
            "kafka-topics",
            "--bootstrap-server",
            native.kafka_bootstrap,
            "--delete",
            "--topic",
            topic,
        )


def test_a_second_up_changes_nothing(native: Stack) -> None:
    before = native.script("status")
    topics_before = partition_counts(native)
    again = native.script("up")
    assert "already running" in again.stdout
    assert again.stdout.count("already running") == 3
    assert "created" not in again.stdout
    assert native.script("status").stdout == before.stdout  # same pids, same ports
    assert partition_counts(native) == topics_before


def test_a_fresh_stack_comes_up_from_nothing_and_down_stops_only_it(
    native: Stack, tmp_path: Path
) -> None:
    kafka_port, controller_port, db_port, redis_port = free_ports(4)
    env = dict(os.environ)
    env.update(
        PAYMENTS_STATE_DIR=str(tmp_path / "state"),
        KAFKA_PORT=str(kafka_port),
        KAFKA_CONTROLLER_PORT=str(controller_port),
        DB_PORT=str(db_port),
        REDIS_PORT=str(redis_port),
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_script(env, *args)

    try:
        up = run("up")
        assert up.returncode == 0, up.stderr + up.stdout
        assert "created database collectioncrm" in up.stdout
        assert up.stdout.count("created topic") == 3
        assert run("status").returncode == 0
        fresh = Stack(
            kafka_bootstrap=f"127.0.0.1:{env['KAFKA_PORT']}",
            db_host="127.0.0.1",
            db_port=int(env["DB_PORT"]),
            db_database="collectioncrm",
            db_username="postgres",
            db_password="admin_password",
            redis_host="127.0.0.1",
            redis_port=int(env["REDIS_PORT"]),
            script_env={
                k: env[k]
                for k in (
                    "PAYMENTS_STATE_DIR",
                    "KAFKA_PORT",
                    "KAFKA_CONTROLLER_PORT",
                    "DB_PORT",
                    "REDIS_PORT",
                )
            },
        )
        assert partition_counts(fresh) == {
            "payment.intake": 12,
            "payment.events": 12,
            "payment.intake.dlq": 3,
        }
        second = run("up")
        assert second.stdout.count("already running") == 3
    finally:
        down = run("down")
    assert down.returncode == 0, down.stderr
    status = run("status")
    assert status.returncode == 1
    assert status.stdout.count(" down") == 3
    # The suite's own stack was not touched.
    assert native.script("status").returncode == 0
    assert run("reset").returncode == 0
    assert not (tmp_path / "state").exists()


def test_a_missing_prerequisite_gets_one_clear_sentence(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("dirname", "mkdir"):
        (tools / name).symlink_to(
            f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else f"/bin/{name}"
        )
    env = {
        "PATH": str(tools),
        "PAYMENTS_STATE_DIR": str(tmp_path / "state"),
        "KAFKA_PORT": str(free_port()),
    }
    result = run_script(env, "up", "kafka")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "stack: java is missing: install Java 17 (apt-get install openjdk-17-jre-headless)"
        " or run scripts/bootstrap."
    ]

    env = dict(
        os.environ,
        PG_BIN="/nonexistent",
        PAYMENTS_STATE_DIR=str(tmp_path / "state2"),
        DB_PORT=str(free_port()),
    )
    result = run_script(env, "up", "postgres")
    assert result.returncode == 1
    assert "PostgreSQL 15 is missing: run scripts/bootstrap" in result.stderr


@pytest.mark.parametrize(
    "wrapper",
    ["kafka-topics", "kafka-console-consumer", "kafka-console-producer", "kafka-consumer-groups"],
)
def test_each_tool_wrapper_runs_its_kafka_tool(native: Stack, wrapper: str) -> None:
    result = native.tool(wrapper, "--version")
    assert result.returncode == 0, result.stderr
    assert re.search(r"4\.\d+\.\d+", result.stdout), result.stdout
    assert (ROOT / "bin" / wrapper).stat().st_mode & 0o111
