"""Logging: one JSON object per line off a terminal (journald), text on one.

Messages are dotted event names (``webhook.answered``); facts go in
``extra``. Only allow-listed fields are printed, so a payload, a secret or
an e-mail address cannot slip into a log line through ``extra``.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Facts a log line may carry. Anything else passed in `extra` is dropped.
ALLOWED = frozenset(
    {
        "store",
        "status",
        "error",
        "rows",
        "failures",
        "event_type",
        "endpoint",
        "attempt",
        "delay",
        "mode",
        "found",
        "request_id",
        "host",
        "port",
        "stores",
        "applied",
        "pending",
        "revision",
        "seconds",
        "count",
        "reason",
    }
)


def _facts(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key in ALLOWED}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_facts(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        facts = " ".join(f"{key}={value}" for key, value in _facts(record).items())
        return f"{when} {record.levelname.lower():7} {record.getMessage()} {facts}".rstrip()


def setup(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    stream = sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log would print query strings (the webhook token): keep it off.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("uvicorn.error").setLevel("WARNING")
    logging.getLogger("apscheduler").setLevel("WARNING")
    logging.getLogger("httpx").setLevel("WARNING")
    logging.getLogger("alembic").setLevel("WARNING")
