"""LOG_FORMAT: one JSON object per line (the default), or mode's text lines."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.ops.log_format import FormattedWorker, JsonLines, log_before_setup
from app.service import create_app
from app.settings import LogFormat, Settings
from tests.stack import ROOT

TRICKY = 'a "quoted" word,\na second line\tand a tab, Tiếng Việt, ₫ 100 and \\ a backslash'


def line_for(record: logging.LogRecord) -> str:
    return JsonLines().format(record)


def record(message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    logger = logging.getLogger("payments.test")
    return logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, message, args, None, extra=extra
    )


def test_a_line_is_one_json_object_with_the_fields_and_extras() -> None:
    before = datetime.now(UTC)
    line = line_for(record("%s paid %d", TRICKY, 5, reference_number="R-1", fields=["amount"]))

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed == {
        "time": parsed["time"],
        "level": "WARNING",
        "logger": "payments.test",
        "message": f"{TRICKY} paid 5",
        "pid": os.getpid(),
        "reference_number": "R-1",
        "fields": ["amount"],
    }
    assert list(parsed)[:4] == ["time", "level", "logger", "message"]
    assert parsed["time"].endswith("Z")
    stamp = datetime.fromisoformat(parsed["time"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    assert line.isascii()  # escaped: the line is valid in any encoding a collector assumes


def test_an_exception_comes_as_exc_info_text_on_the_same_line() -> None:
    try:
        raise ValueError(TRICKY)
    except ValueError:
        logger = logging.getLogger("payments.test")
        exception = logger.makeRecord(
            logger.name, logging.ERROR, __file__, 1, "it broke", (), sys.exc_info()
        )

    line = line_for(exception)

    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "it broke"
    assert parsed["level"] == "ERROR"
    assert parsed["exc_info"].startswith("Traceback (most recent call last):\n")
    assert parsed["exc_info"].endswith(f"ValueError: {TRICKY}")


def test_values_json_cannot_hold_become_text() -> None:
    odd = object()
    parsed = json.loads(line_for(record("odd", when=datetime(2026, 1, 2, tzinfo=UTC), odd=odd)))
    assert parsed["when"] == "2026-01-02T00:00:00+00:00"
    assert parsed["odd"] == str(odd)


# --- the worker, the fronts and the commands set their root logger up this way ----------


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


def worker_log(log_format: LogFormat, logfile: Path, *, faust_worker: bool) -> list[str]:
    """Set logging up as a worker (Faust's or mode's) does, log two lines, return the file."""
    if faust_worker:
        app = create_app(Settings(log_format=log_format), store="memory://")
        worker: Any = app.conf.Worker(
            app, loglevel="info", logfile=str(logfile), redirect_stdouts=False
        )
    else:
        worker = FormattedWorker(
            loglevel="INFO", logfile=str(logfile), log_format=log_format, redirect_stdouts=False
        )
    worker._setup_logging()
    logging.getLogger("aiokafka.consumer").info("Joined group %r", "payments")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("payments.audit").exception(TRICKY, extra={"audit": "decision"})
    for handler in logging.getLogger().handlers:
        handler.flush()
    return logfile.read_text().splitlines()


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("faust_worker", [True, False], ids=["worker", "front-or-command"])
def test_json_is_what_the_root_logger_writes(tmp_path: Path, faust_worker: bool) -> None:
    lines = worker_log("json", tmp_path / "worker.log", faust_worker=faust_worker)

    parsed = [json.loads(line) for line in lines]  # every line, whatever the library
    joined, failed = parsed[0], parsed[-1]
    assert (joined["logger"], joined["level"], joined["message"]) == (
        "aiokafka.consumer",
        "INFO",
        "Joined group 'payments'",
    )
    assert (failed["logger"], failed["message"], failed["audit"]) == (
        "payments.audit",
        TRICKY,
        "decision",
    )
    assert failed["exc_info"].endswith("RuntimeError: boom")


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("faust_worker", [True, False], ids=["worker", "front-or-command"])
def test_text_keeps_modes_format(tmp_path: Path, faust_worker: bool) -> None:
    lines = worker_log("text", tmp_path / "worker.log", faust_worker=faust_worker)

    text_line = re.compile(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] \[\d+\] \[(INFO|ERROR)\]: (?P<message>.*)$"
    )
    first = text_line.match(lines[0])
    assert first is not None, lines[0]
    assert first["message"].strip() == "Joined group 'payments'"
    assert 'a "quoted" word,' in "\n".join(lines)
    assert "Traceback (most recent call last):" in lines


@pytest.mark.usefixtures("restored_logging")
def test_lines_logged_while_the_app_is_built_are_json_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logging.getLogger().handlers.clear()
    log_before_setup("json", "info")
    logging.getLogger("app.intake.signatures").warning("no WEBHOOK_SECRET is set")

    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "no WEBHOOK_SECRET is set"


def test_a_command_logs_json_on_stderr_and_keeps_stdout_for_its_output() -> None:
    # Port 1 on loopback refuses at once: the command fails, offline, in well under a second.
    result = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        env=os.environ | {"DB_HOST": "127.0.0.1", "DB_PORT": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert result.stdout == ""
    # The command's own answer to the operator is one plain line saying what to do;
    # every log line around it is JSON.
    (said,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "cannot reach Postgres at 127.0.0.1:1" in said
    assert "Connect call failed" in said
    logged = [
        json.loads(line) for line in result.stderr.splitlines() if not line.startswith("error: ")
    ]
    assert logged
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in logged)


def test_an_audit_batch_is_one_json_line_per_entry_without_an_encoder_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.recording.audit_trail import BATCH_ATTRIBUTE

    entries = [
        (f"created REF-{n} from staging {n}", {"audit": "decision", "reference_number": f"REF-{n}"})
        for n in range(3)
    ]
    entries.append((TRICKY, {"audit": "decision", "when": datetime(2026, 12, 2, tzinfo=UTC)}))
    batch = record("%s", "\n".join(message for message, _ in entries), **{BATCH_ATTRIBUTE: entries})
    made: list[json.JSONEncoder] = []
    built = json.JSONEncoder.__init__

    def counted(self: json.JSONEncoder, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        built(self, *args, **kwargs)

    monkeypatch.setattr(json.JSONEncoder, "__init__", counted)
    lines = line_for(batch).split("\n")
    assert made == []  # one encoder for every batch, not one per line (bench/staging)
    monkeypatch.undo()
    assert len(lines) == len(entries)
    for line, (message, fields) in zip(lines, entries, strict=True):
        assert line.isascii()
        parsed = json.loads(line)
        assert list(parsed)[:5] == ["time", "level", "logger", "message", "pid"]
        assert parsed["message"] == message
        expected = {**parsed, **fields}
        assert line == json.dumps(expected, ensure_ascii=True, default=str)
