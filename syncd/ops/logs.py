"""Logging: one JSON object per line off a terminal (journald), text on one.

Messages are dotted event names (``webhook.answered``); facts go in
``extra``. Three walls keep customer data and secrets out of the logs:

- only allow-listed facts are printed, so a payload cannot slip in through
  ``extra``; tracebacks are cut to the exception's class name, because a
  database error's text carries the statement's parameters;
- anything shaped like an e-mail address is replaced, wherever it appears;
- the values registered with :func:`hide` (the API keys and webhook
  secrets) are replaced, wherever they appear.

The request id of the HTTP request being handled (see
:mod:`syncd.ops.request_id`) goes on every line written while handling it.
This module must never print a record's ``args`` or ``extra`` unfiltered.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from syncd.ops import request_id

# Facts a log line may carry. Anything else passed in `extra` is dropped.
ALLOWED = frozenset(
    {
        "store",
        "status",
        "error",
        "rows",
        "failures",
        "event_type",
        "event_id",
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
        "signal",
        "from_zone",
        "to_zone",
        "orders",
        "refunds",
    }
)
EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
EMAIL_MASK = "<e-mail>"
SECRET_MASK = "<secret>"  # noqa: S105 (the mask, not a secret)
# Shorter values would mask ordinary words; a real key or token is longer.
MIN_HIDDEN_LENGTH = 6
_hidden: set[str] = set()


def hide(values: Iterable[str | None]) -> None:
    """Never print these values (API keys, webhook secrets) in any log line."""
    for value in values:
        if value and len(value) >= MIN_HIDDEN_LENGTH:
            _hidden.add(value)


def scrub(text: str) -> str:
    for value in sorted(_hidden, key=len, reverse=True):
        if value in text:
            text = text.replace(value, SECRET_MASK)
    return EMAIL.sub(EMAIL_MASK, text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


def _facts(record: logging.LogRecord) -> dict[str, Any]:
    facts = {key: _clean(value) for key, value in record.__dict__.items() if key in ALLOWED}
    current = request_id.current.get()
    if current is not None:
        facts["request_id"] = _clean(current)  # ours wins over a raw header; scrubbed too
    elif facts.get("request_id") is None:
        facts.pop("request_id", None)
    return facts


def _message(record: logging.LogRecord) -> str:
    try:
        return scrub(record.getMessage())
    except Exception:  # a bad %-format must not lose the line
        return scrub(str(record.msg))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _message(record),
            **_facts(record),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        facts = " ".join(f"{key}={value}" for key, value in _facts(record).items())
        if record.exc_info and record.exc_info[0] is not None:
            facts = f"{facts} exception={record.exc_info[0].__name__}"
        return f"{when} {record.levelname.lower():7} {_message(record)} {facts}".rstrip()


def setup(
    level: str = "INFO", *, json_lines: bool | None = None, stream: TextIO | None = None
) -> None:
    """Route every logger through one handler on ``stream`` (default stderr):
    JSON lines unless ``stream`` is a terminal."""
    stream = stream or sys.stderr
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
    logging.getLogger("httpx").setLevel("WARNING")  # INFO lines carry URLs
    logging.getLogger("httpcore").setLevel("WARNING")  # DEBUG lines carry headers
    logging.getLogger("alembic").setLevel("WARNING")
