"""Connections that send no request: a header timeout and a connection cap.

uvicorn closes a keep-alive connection that stays idle after a response
(``timeout_keep_alive``), but it has no timer for a connection that has not
sent a request yet, nor for headers that trickle in: a client that connects
and stays silent, or sends one byte a second, holds a file descriptor and a
slot forever. Enough of them and the process runs out of descriptors; with
uvloop (libuv) an accept that finds none is answered with a reset, and
nothing is logged: every webhook fails and no one is told why.

Why a protocol subclass and not something else:

- uvicorn's ``limit_concurrency`` counts connections but acts only once a
  request's headers are complete (it answers that request 503): a silent
  connection is never refused, never closed, and keeps its descriptor.
- Another server (hypercorn, granian) means another set of lifespan,
  signal and shutdown behaviours to prove again; nginx in front has
  ``client_header_timeout``, but syncd must not depend on a proxy to survive.
- :class:`GuardedHttpToolsProtocol` adds to uvicorn's own httptools
  protocol (the one uvicorn picks) exactly the missing timer, started when
  a connection opens and again after each response, stopped when a
  request's headers are complete. Everything else is uvicorn's.

The cap: each connection waiting for its headers is remembered, oldest
first. When the process holds more connections than the open-file limit
leaves room for (:func:`connection_cap`), the oldest waiting one is closed.
A real sender writes its request as soon as it connects, so it is the
newest, never the oldest; an idle flood is shed before the process runs
out of descriptors. Both closings are logged with counts, at most one line
per 10 s each.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("syncd.serve")
LOG_EVERY = 10.0  # seconds between two log lines about the same kind of closing


def connection_cap(limit: int | None = None) -> int:
    """How many client connections the process may hold: its open-file
    limit less a reserve for everything else (database pools, the API
    clients, the apply process's pipes, log files): a quarter of the limit,
    at most 256."""
    if limit is None:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            limit = 1 << 20
    return max(16, limit - min(256, limit // 4))


class _Throttled:
    """Counts closings and logs them: the first at once, those that follow
    within LOG_EVERY seconds in one line at the end of that time."""

    def __init__(self, event: str, level: int, **facts: Any) -> None:
        self.event, self.level, self.facts = event, level, facts
        self.total = 0
        self._unlogged = 0
        self._logged_at = -LOG_EVERY
        self._flush: asyncio.TimerHandle | None = None

    def count(self, loop: asyncio.AbstractEventLoop) -> None:
        self.total += 1
        self._unlogged += 1
        wait = self._logged_at + LOG_EVERY - time.monotonic()
        if wait <= 0:
            self._log()
        elif self._flush is None:
            self._flush = loop.call_later(wait, self._log)

    def _log(self) -> None:
        self._flush = None
        if self._unlogged:
            log.log(self.level, self.event, extra={"count": self._unlogged, **self.facts})
            self._logged_at, self._unlogged = time.monotonic(), 0


class ConnectionGuard:
    """The state one server's connections share."""

    def __init__(self, header_timeout: float, cap: int) -> None:
        self.header_timeout = header_timeout
        self.cap = cap
        self.waiting: dict[GuardedHttpToolsProtocol, None] = {}  # oldest first
        self.timed_out = _Throttled("serve.header_timeout", logging.INFO, seconds=header_timeout)
        self.shed = _Throttled(
            "serve.connections_shed",
            logging.WARNING,
            reason=f"more than {cap} connections: the open-file limit is near",
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and the cap.
    Made per server by :func:`guarded_protocol`."""

    guard: ConnectionGuard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._await_headers()
        if len(self.connections) > self.guard.cap:
            oldest = next(iter(self.guard.waiting))
            oldest.transport.close()
            oldest._stop_waiting()
            self.guard.shed.count(self.loop)

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_timer = self.loop.call_later(self.guard.header_timeout, self._headers_too_late)
        self.guard.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.guard.waiting.pop(self, None)

    def _headers_too_late(self) -> None:
        self._header_timer = None
        self.guard.waiting.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()
            self.guard.timed_out.count(self.loop)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        next_is_waiting = not self.pipeline  # else its headers are in already
        super().on_response_complete()
        if next_is_waiting and not self.transport.is_closing():
            self._await_headers()  # the next request's, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)


def guarded_protocol(header_timeout: float, cap: int) -> type[GuardedHttpToolsProtocol]:
    """A protocol class for one server (uvicorn's ``http=``)."""
    guard = ConnectionGuard(header_timeout, cap)
    return type("GuardedProtocol", (GuardedHttpToolsProtocol,), {"guard": guard})


def log_out_of_descriptors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: says plainly when accepting a
    connection failed for want of file descriptors (asyncio's own loop
    reports that here; uvloop resets such a connection without a word, which
    the cap above is there to prevent)."""
    error = context.get("exception")
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        log.error(
            "serve.out_of_file_descriptors",
            extra={"error": errno.errorcode[error.errno], "reason": f"open-file limit {limit}"},
        )
        return
    loop.default_exception_handler(context)
