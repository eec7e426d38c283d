"""The daemon's HTTP app: routes of docs/api.md §3 and the lifespan that runs the
inbox writer, the apply worker and the reconcile scheduler beside them.

Nothing else shares this app: no CSRF, session or CORS middleware, so the
webhook route takes any POST from the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from syncd.config import Settings, StoreConfig
from syncd.db import dialect
from syncd.db.engine import current_revision, head_revision
from syncd.inbox import GroupCommitter, backlog, utcnow
from syncd.ops import request_id, watchdog
from syncd.ops.metrics import Freshness, Metrics
from syncd.ops.request_id import RequestIdMiddleware
from syncd.ops.status import freshness
from syncd.receiver import WEBHOOK_PATH, WebhookEndpoint, error, webhook_store
from syncd.reconcile import reconcile_store
from syncd.scheduler import Job, start_scheduler
from syncd.shoperti.client import ShopertiClient
from syncd.worker import ApplyStep, InThread, Worker
from syncd.worker_process import ApplyProcess

log = logging.getLogger("syncd.app")
T = TypeVar("T")
# How long /readyz and /metrics wait for the database before answering
# without it (readyz: 503; metrics: syncd_database_up 0).
CHECK_TIMEOUT = 2.0


class OneAtATime(Generic[T]):
    """A blocking database read for a health route, run in a thread of its
    own, at most one at a time; a caller waits at most ``within`` seconds.

    A database that stops answering hangs the read, not the route: the read
    keeps its one thread and connection until the database answers, and the
    callers that come meanwhile wait for that same read (and give up after
    ``within``) instead of piling up threads and connections behind it. The
    thread is a daemon thread: a hung read never holds up the process's exit
    (neither the default executor, busy with the worker, nor the exit's join
    of executor threads stands in the way).
    """

    def __init__(self, read: Callable[[], T], name: str) -> None:
        self._read = read
        self._name = name
        self._lock = threading.Lock()
        # The read's value, or what it raised: a Future that no one awaits
        # any more (its callers gave up) must not hold an exception, or
        # asyncio logs it as never retrieved.
        self._future: Future[tuple[T | None, BaseException | None]] | None = None

    def _run(self, future: Future[tuple[T | None, BaseException | None]]) -> None:
        try:
            future.set_result((self._read(), None))
        except BaseException as exc:
            future.set_result((None, exc))

    async def wait(self, within: float) -> T:
        with self._lock:
            if self._future is None or self._future.done():
                self._future = Future()
                self._future.set_running_or_notify_cancel()
                thread = threading.Thread(
                    target=self._run, args=(self._future,), name=self._name, daemon=True
                )
                thread.start()
            future = self._future
        value, error = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), within)
        if error is not None:
            raise error
        return value  # type: ignore[return-value]


@dataclass
class Daemon:
    """What the app runs; tests reach in through ``app.state.daemon``."""

    settings: Settings
    engine: Engine
    metrics: Metrics = field(default_factory=Metrics)
    clients: dict[str, ShopertiClient] = field(default_factory=dict)
    apply_in_process: bool = False
    # The receiver's and the health routes' own engine (``syncd serve`` gives
    # them a small pool apart from the worker's and reconcile's, so that
    # background work can never take the connections webhooks need).
    front_engine: Engine | None = None
    committer: GroupCommitter = field(init=False)
    apply_process: ApplyProcess | None = field(init=False, default=None)
    # What applies events, for the worker and for reconcile alike.
    apply_step: ApplyStep = field(init=False)
    worker: Worker = field(init=False)
    head: str | None = field(init=False)
    # How long the apply process may be silent before the watchdog is starved.
    watchdog_patience: float = 5.0
    watchdog: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        front = self.front_engine or self.engine
        self.committer = GroupCommitter(front, commit_timeout=self.settings.commit_timeout)
        self._ready_check = OneAtATime(self._ready, "syncd-readyz")
        self._backlog_read = OneAtATime(lambda: backlog(front), "syncd-backlog")
        self._render = OneAtATime(self.metrics.render, "syncd-metrics")
        self._backlog: dict[tuple[str, str], int] | BaseException = {}
        self._freshness_read = OneAtATime(
            lambda: freshness(front, self.settings.stores), "syncd-freshness"
        )
        self._freshness: Mapping[str, Freshness] = {}
        for store in self.settings.stores.values():
            if store.has_api and store.name not in self.clients:
                self.clients[store.name] = ShopertiClient.for_store(
                    store, on_response=self.metrics.api_hook(store.name)
                )
        if self.apply_in_process:
            self.apply_process = ApplyProcess(self.settings)
        settings = self.settings
        self.apply_step = self.apply_process or InThread(
            self.engine, settings.worker_batch_size, settings.max_attempts
        )
        self.worker = Worker(
            self.engine,
            self.settings,
            clients=self.clients,
            metrics=self.metrics,
            apply_step=self.apply_step,
        )
        self.head = head_revision()
        self.metrics.watch_backlog(self._last_backlog, stores=self.settings.stores)
        self.metrics.watch_commits(lambda: self.committer.commits)
        self.metrics.watch_freshness(
            lambda: self._freshness,
            utcnow,
            {
                store.name: self.settings.reconcile_interval
                for store in self.settings.stores.values()
                if store.has_api and self.settings.reconcile_interval > 0
            },
        )

    def reconcile_jobs(self) -> dict[str, Job]:
        """One reconcile pass per store with an API client, by store name; a
        pass that found events wakes the worker."""

        def job(store: StoreConfig, client: ShopertiClient) -> Job:
            async def run() -> None:
                report = await reconcile_store(
                    self.engine,
                    self.settings,
                    store,
                    client,
                    metrics=self.metrics,
                    step=self.apply_step,
                )
                if report.found:
                    self.worker.wake()

            return run

        return {
            store.name: job(store, self.clients[store.name])
            for store in self.settings.stores.values()
            if store.name in self.clients
        }

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

    async def ready(self) -> tuple[bool, str]:
        try:
            return await self._ready_check.wait(CHECK_TIMEOUT)
        except TimeoutError:
            return False, f"database did not answer within {CHECK_TIMEOUT:g} s"

    def _ready(self) -> tuple[bool, str]:
        front = self.front_engine or self.engine
        try:
            with dialect.reading(front) as conn:
                conn.execute(text("SELECT 1"))
            current = current_revision(front)
        except Exception as exc:
            return False, f"database unavailable ({type(exc).__name__})"
        if current != self.head:
            return False, f"schema at {current}, not {self.head}: run `syncd db upgrade`"
        return True, "ready"

    async def refresh_backlog(self) -> None:
        """Read the backlog for the next scrape, waiting at most CHECK_TIMEOUT."""
        try:
            self._backlog = await self._backlog_read.wait(CHECK_TIMEOUT)
        except Exception as exc:  # the scrape says syncd_database_up 0
            self._backlog = exc

    async def refresh_freshness(self) -> None:
        """Read the per-store oldest pending event and last reconcile success
        for the next scrape, waiting at most CHECK_TIMEOUT; without an answer
        the scrape leaves those gauges out (syncd_database_up says why)."""
        try:
            self._freshness = await self._freshness_read.wait(CHECK_TIMEOUT)
        except Exception:
            self._freshness = {}

    async def render_metrics(self) -> bytes:
        """The scrape's text: the database reads first (bounded, side by
        side), then the render off the event loop, within twice CHECK_TIMEOUT."""
        await asyncio.gather(self.refresh_backlog(), self.refresh_freshness())
        return await self._render.wait(2 * CHECK_TIMEOUT)

    def _last_backlog(self) -> dict[tuple[str, str], int]:
        if isinstance(self._backlog, BaseException):
            raise self._backlog
        return self._backlog


class SyncdApp(Starlette):
    """The daemon's routes, with a lane of its own for webhooks.

    A webhook POST skips Starlette's router and its middleware layers (the
    request id is bound here as RequestIdMiddleware does; an unexpected
    error answers as ``server_error`` and is raised on, as Starlette's outer
    middleware does): they cost more per request than the rest of the
    hand-over to the inbox. Any other request, or a webhook path not matched
    exactly, takes the routes, which answer the same for a webhook."""

    webhook: WebhookEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.webhook is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            store = webhook_store(scope["path"])
            if store is not None:
                await self._webhook(self.webhook, scope, receive, send, store)
                return
        await super().__call__(scope, receive, send)

    async def _webhook(
        self, webhook: WebhookEndpoint, scope: Scope, receive: Receive, send: Send, store: str
    ) -> None:
        scope["app"] = self
        if store:
            scope["path_params"] = {"store": store}
        request = Request(scope, receive, send)
        with request_id.bound(scope) as rid:
            unexpected: Exception | None = None
            try:
                response = await webhook.handle(request)
            except Exception as exc:
                unexpected = exc
                response = await server_error(request, exc)
            # No response of the route names it yet: appended, not looked up.
            response.raw_headers.append((request_id.RAW_HEADER, rid.encode()))
            await response(scope, receive, send)
            if unexpected is not None:
                raise unexpected


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    run_worker: bool = True,
    run_scheduler: bool = True,
    metrics: Metrics | None = None,
    apply_in_process: bool = False,
    front_engine: Engine | None = None,
) -> Starlette:
    daemon = Daemon(
        settings,
        engine,
        metrics=metrics or Metrics(),
        apply_in_process=apply_in_process,
        front_engine=front_engine,
    )
    webhook = WebhookEndpoint(settings, daemon.committer, daemon.metrics, daemon.worker.wake)
    app = SyncdApp(
        routes=[
            Route(WEBHOOK_PATH, webhook.handle, methods=["POST"]),
            Route(WEBHOOK_PATH + "/{store}", webhook.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_route, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=functools.partial(_running, daemon, run_worker, run_scheduler),
    )
    # docs/api.md §1: the platform counts a 3xx as a failed delivery — never redirect
    # ("/webhooks/shoperti/" is a 404, not a 307 to the route without the slash).
    app.router.redirect_slashes = False
    app.state.daemon = daemon
    app.webhook = webhook
    return app


def _daemon(request: Request) -> Daemon:
    daemon: Daemon = request.app.state.daemon
    return daemon


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    ok, reason = await _daemon(request).ready()
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "reason": reason},
        status_code=200 if ok else 503,
    )


async def metrics_route(request: Request) -> Response:
    try:
        body = await _daemon(request).render_metrics()
    except TimeoutError:
        return error(503, f"metrics not rendered within {2 * CHECK_TIMEOUT:g} s")
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
async def _running(
    daemon: Daemon, run_worker: bool, run_scheduler: bool, _: Starlette
) -> AsyncIterator[None]:
    """The app's lifespan: the inbox writer, the worker, the reconcile
    scheduler and the watchdog run while it serves; stopped in reverse."""
    settings = daemon.settings
    await daemon.committer.start()
    if run_worker:
        daemon.worker.start()
    scheduler = None
    if run_scheduler:
        scheduler = start_scheduler(
            daemon.reconcile_jobs(),
            interval=settings.reconcile_interval,
            concurrency=settings.reconcile_concurrency,
        )
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
