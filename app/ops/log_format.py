"""How log lines are written: one JSON object per line (LOG_FORMAT=json) or mode's text.

mode (Faust's service library) sets up the root logger when a worker starts,
for the Faust worker, the webhook fronts and the CLI commands alike; each of
them calls :func:`use_log_format` from ``on_setup_root_logger``, after mode
has made its handlers, so every line, Faust's and aiokafka's included, goes
through the same formatter. LOG_FORMAT=text leaves mode's formatter in place.

A JSON line holds ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``,
``pid``, ``exc_info`` when there is an exception, and every ``extra=`` field
of the call. It is ASCII-only: newlines, quotes and non-ASCII characters are
escaped, so a line is always one line and always valid UTF-8.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from mode import Worker
from pythonjsonlogger.json import JsonFormatter

from app.recording.audit_trail import BATCH_ATTRIBUTE
from app.settings import LogFormat

#: An audit batch's lines: what ``json.dumps(..., ensure_ascii=True, default=str)`` writes.
#: One encoder for all of them; ``json.dumps`` with any argument builds a new one per call,
#: which cost more than the line itself (~5 µs of ~11 per staged row; bench/staging).
_AUDIT_ENCODER = json.JSONEncoder(ensure_ascii=True, default=str)

#: LogRecord attributes → JSON keys, in this order (extras come after them).
FIELDS = {"levelname": "level", "name": "logger", "message": "message", "process": "pid"}


class JsonLines(JsonFormatter):
    """python-json-logger's formatter with our field names and a UTC ``time`` first."""

    def __init__(self) -> None:
        super().__init__(list(FIELDS), rename_fields=FIELDS)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = _utc(record.created)
        super().add_fields(log_data, record, message_dict)

    def format(self, record: logging.LogRecord) -> str:
        batch = getattr(record, BATCH_ATTRIBUTE, None)
        if batch is None:
            return super().format(record)
        # Many audit lines in one record: the same keys, in the same order, as one line each.
        head = {"time": _utc(record.created), "level": record.levelname, "logger": record.name}
        encode = _AUDIT_ENCODER.encode
        return "\n".join(
            encode({**head, "message": message, "pid": record.process, **fields})
            for message, fields in batch
        )


def _utc(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def use_log_format(logger: logging.Logger, log_format: LogFormat) -> None:
    """Give each of ``logger``'s handlers the formatter of ``log_format``."""
    if log_format == "text":
        return  # mode's own format, for humans at a terminal
    formatter = JsonLines()
    for handler in logger.handlers:
        handler.setFormatter(formatter)


def log_before_setup(log_format: LogFormat, level: str) -> None:
    """Lines logged while the app is built, before mode's setup, in ``log_format`` on stderr.

    Without a handler they would reach Python's last-resort handler as bare text.
    mode's setup replaces this handler when the worker or command starts.
    """
    if log_format == "text" or logging.root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    logging.root.addHandler(handler)
    logging.root.setLevel(level.upper())


class FormattedWorker(Worker):
    """mode's worker (fronts, CLI commands) writing its logs in ``log_format``."""

    def __init__(self, *services: Any, log_format: LogFormat = "json", **kwargs: Any) -> None:
        self.log_format = log_format
        super().__init__(*services, **kwargs)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        use_log_format(logger, self.log_format)
