"""A request id per HTTP request: on every log line written while the request
is handled, and in the ``X-Request-ID`` answer header.

The id comes from the incoming ``X-Request-ID`` header when it is a short
plain token (a proxy's id, e.g. nginx's ``$request_id``, so that both logs
line up); otherwise one is made up: 32 hex digits, a random prefix drawn once
per process and a counter (no system call per request, unlike ``uuid4``).
Nothing else from the request is ever copied, so a hostile header cannot
forge or break a log line.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
RAW_HEADER = HEADER.encode()
current: ContextVar[str | None] = ContextVar("syncd_request_id", default=None)
_TOKEN = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count(1)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case, as ASGI servers pass
    names) in an HTTP ``scope``, as ``Headers(scope=scope).get`` would read
    it, without building a mapping for every request."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def accept_or_make(incoming: str | None) -> str:
    if incoming is not None and _TOKEN.match(incoming):
        return incoming
    return f"{_PREFIX}{next(_COUNTER):016x}"


@contextmanager
def bound(scope: Scope) -> Iterator[str]:
    """The request's id, current while the block runs (on its log lines)."""
    request_id = accept_or_make(header(scope, RAW_HEADER))
    token = current.set(request_id)
    try:
        yield request_id
    finally:
        current.reset(token)


class RequestIdMiddleware:
    """Pure ASGI middleware (no response buffering, lifespan passes through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with bound(scope) as request_id:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MutableHeaders(scope=message)[HEADER] = request_id
                await send(message)

            await self.app(scope, receive, send_with_id)
