"""The daemon's HTTP app: routes of SPEC §5 and the lifespan that runs the
inbox writer, the apply worker and the reconcile scheduler beside them.

Nothing else shares this app: no CSRF, session or CORS middleware, so the
webhook route takes any POST from the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from syncd.config import Settings
from syncd.db import dialect
from syncd.db.engine import current_revision, head_revision
from syncd.inbox import GroupCommitter, utcnow
from syncd.ops import watchdog
from syncd.ops.metrics import Metrics
from syncd.ops.request_id import RequestIdMiddleware
from syncd.ops.status import freshness
from syncd.receiver import WebhookEndpoint, error
from syncd.shoperti.client import ShopertiClient
from syncd.worker import Worker, backlog
from syncd.worker_process import ApplyProcess

log = logging.getLogger("syncd.app")


@dataclass
class Daemon:
    """What the app runs; tests reach in through ``app.state.daemon``."""

    settings: Settings
    engine: Engine
    metrics: Metrics = field(default_factory=Metrics)
    clients: dict[str, ShopertiClient] = field(default_factory=dict)
    apply_in_process: bool = False
    committer: GroupCommitter = field(init=False)
    apply_process: ApplyProcess | None = field(init=False, default=None)
    worker: Worker = field(init=False)
    head: str | None = field(init=False)
    # How long the apply process may be silent before the watchdog is starved.
    watchdog_patience: float = 5.0
    watchdog: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.committer = GroupCommitter(self.engine)
        for store in self.settings.stores.values():
            if store.has_api and store.name not in self.clients:
                assert store.api_url is not None and store.api_key is not None
                self.clients[store.name] = ShopertiClient(
                    store.api_url,
                    store.api_key.reveal(),
                    store=store.name,
                    on_response=self.metrics.api_hook(store.name),
                )
        if self.apply_in_process:
            self.apply_process = ApplyProcess(self.settings)
        self.worker = Worker(
            self.engine,
            self.settings,
            clients=self.clients,
            metrics=self.metrics,
            apply_step=self.apply_process.apply if self.apply_process else None,
        )
        self.head = head_revision()
        self.metrics.watch_backlog(lambda: backlog(self.engine), stores=self.settings.stores)
        self.metrics.watch_commits(lambda: self.committer.commits)
        self.metrics.watch_freshness(
            lambda: freshness(self.engine, self.settings.stores),
            utcnow,
            {
                store.name: self.settings.reconcile_interval
                for store in self.settings.stores.values()
                if store.has_api and self.settings.reconcile_interval > 0
            },
        )

    def watchdog_problem(self) -> str | None:
        """Why the systemd watchdog must not be fed now; None when all is well."""
        if not self.committer.running:
            return "the inbox writer is not running"
        if self.worker.crashed:
            return "the worker loop has ended"
        process = self.apply_process
        if process is not None and process.silent_for() > self.watchdog_patience:
            return f"the apply process has not answered for {self.watchdog_patience:g} s"
        return None

    def ready(self) -> tuple[bool, str]:
        try:
            with dialect.reading(self.engine) as conn:
                conn.execute(text("SELECT 1"))
            current = current_revision(self.engine)
        except Exception as exc:
            return False, f"database unavailable ({type(exc).__name__})"
        if current != self.head:
            return False, f"schema at {current}, not {self.head}: run `syncd db upgrade`"
        return True, "ready"


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    run_worker: bool = True,
    run_scheduler: bool = True,
    metrics: Metrics | None = None,
    apply_in_process: bool = False,
) -> Starlette:
    daemon = Daemon(
        settings, engine, metrics=metrics or Metrics(), apply_in_process=apply_in_process
    )
    webhook = WebhookEndpoint(settings, daemon.committer, daemon.metrics, daemon.worker.wake)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ok, reason = await asyncio.to_thread(daemon.ready)
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "reason": reason},
            status_code=200 if ok else 503,
        )

    async def metrics_route(_: Request) -> Response:
        body = await asyncio.to_thread(daemon.metrics.render)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def http_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        reasons = {404: "not found", 405: "method not allowed"}
        response = error(exc.status_code, reasons.get(exc.status_code, str(exc.detail)))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def server_error(_: Request, exc: Exception) -> Response:
        # Whatever went wrong, nothing was acknowledged: ask the platform to retry.
        log.error("http.unexpected_error", extra={"error": type(exc).__name__})
        return error(503, "internal error; nothing was stored, retry later")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await daemon.committer.start()
        if run_worker:
            daemon.worker.start()
        scheduler = None
        if run_scheduler:
            from syncd.scheduler import start_scheduler

            scheduler = start_scheduler(daemon)
        daemon.watchdog = watchdog.start(daemon.watchdog_problem)
        try:
            yield
        finally:
            await watchdog.stop(daemon.watchdog)
            if scheduler is not None:
                await scheduler.stop()
            await daemon.committer.stop()
            if run_worker:
                await daemon.worker.stop()
            if daemon.apply_process is not None:
                await asyncio.to_thread(daemon.apply_process.close)
            for client in daemon.clients.values():
                await client.aclose()

    app = Starlette(
        routes=[
            Route("/webhooks/shoperti", webhook.handle, methods=["POST"]),
            Route("/webhooks/shoperti/{store}", webhook.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    # SPEC §1: the platform counts a 3xx as a failed delivery — never redirect
    # ("/webhooks/shoperti/" is a 404, not a 307 to the route without the slash).
    app.router.redirect_slashes = False
    app.state.daemon = daemon
    return app
