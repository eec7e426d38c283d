"""``syncd serve``: uvicorn started from code, with the daemon's lifespan.

Start: the schema must be at head (else one line naming `syncd db upgrade`),
and each store's local time columns are brought to its configured time zone
(:func:`syncd.localtime.ensure_zones`, one log line if that recomputes), then
the socket is bound and the lifespan starts the inbox writer, the
worker and the scheduler; only then is ``READY=1`` sent to systemd.

Stop, on SIGTERM (or SIGINT): ``STOPPING=1`` at once; uvicorn stops
accepting, finishes in-flight requests for at most ``SYNCD_SHUTDOWN_GRACE``
seconds (cancelled past it: a cancelled request was never answered 2xx);
then the lifespan stops the scheduler, flushes the inbox writer and lets the
worker finish its batch. The process exits 0. Unlike plain uvicorn it does
not re-raise the signal after a clean stop: systemd and the operator should
see a clean exit status, not "killed by SIGTERM".

This module must never answer a request itself nor touch the database
beyond those two start-up steps: routes and work belong to :mod:`syncd.app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Generator
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from syncd import localtime
from syncd.app import create_app
from syncd.config import Settings
from syncd.connections import connection_cap, guarded_protocol, log_out_of_descriptors
from syncd.db.engine import check_schema_at_head, make_engine
from syncd.ops import memory, systemd

log = logging.getLogger("syncd.serve")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Server(uvicorn.Server):
    """uvicorn with systemd notices and an exit status of 0 after a signal."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self.stop_requested_at: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        where = self.listening()
        systemd.notify(f"READY=1\nSTATUS=receiving webhooks on {where}")
        log.info(
            "serve.ready",
            extra={
                "host": self.settings.host,
                "port": int(where.rsplit(":", 1)[1]) if ":" in where else self.settings.port,
                "stores": sorted(self.settings.stores),
            },
        )

    def listening(self) -> str:
        """``host:port`` actually bound (the port may have been 0)."""
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                return f"{host}:{port}"
        return f"{self.settings.host}:{self.settings.port}"

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.stop_requested_at is None:
            self.stop_requested_at = time.monotonic()
            systemd.notify("STOPPING=1\nSTATUS=stopping: finishing in-flight work")
            log.info(
                "serve.stopping",
                extra={"signal": signal.Signals(sig).name, "seconds": self.settings.shutdown_grace},
            )
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn's own version re-raises the signal after the graceful stop,
        # which kills the process with it; a finished shutdown is a success.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def build_server(settings: Settings, app: ASGIApp) -> _Server:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,
        access_log=False,  # it would print query strings: the webhook token
        timeout_graceful_shutdown=max(math.ceil(settings.shutdown_grace), 1),
        server_header=False,
        # Nothing reads the client's address or scheme: X-Forwarded-* would
        # only cost a rewrite per request.
        proxy_headers=False,
        # Idle and slow connections are closed (syncd.connections).
        http=guarded_protocol(settings.header_timeout, connection_cap()),
        timeout_keep_alive=settings.keepalive_timeout,
    )
    return _Server(config, settings)


async def serve(settings: Settings) -> None:
    asyncio.get_running_loop().set_exception_handler(log_out_of_descriptors)
    engine = make_engine(settings.database_url)
    # The receiver's and health routes' own small pool: the inbox writer
    # holds one connection, /readyz and /metrics one each, whatever the
    # worker and reconcile do with the main pool.
    front = make_engine(settings.database_url, pool_size=3, max_overflow=2, pool_timeout=5)
    try:
        check_schema_at_head(engine)
        localtime.ensure_zones(engine, settings.stores.values())
        # Applying runs in a child process: it would otherwise share this
        # process's interpreter lock with the receiver (syncd.worker_process).
        app = create_app(settings, engine, apply_in_process=True, front_engine=front)
        memory.settle()  # what the app built is kept for good: out of the collector's way
        server = build_server(settings, app)
        try:
            await server.serve()
        finally:
            if server.stop_requested_at is None:  # stopped without a signal
                systemd.notify("STOPPING=1")
    finally:
        engine.dispose()
        front.dispose()
    if not server.started:
        raise SystemExit(1)
    took = time.monotonic() - (server.stop_requested_at or time.monotonic())
    log.info("serve.stopped", extra={"seconds": round(took, 3)})
