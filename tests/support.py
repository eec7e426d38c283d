"""Helpers shared by the tests (data builders are in ``tests/factories.py``,
fixtures in ``tests/conftest.py``).

- waiting with a deadline instead of sleeping, free ports, the repository root;
- the daemon's app on a real port in a thread (``serving``, ``daemon``), a stub
  of Shoperti's API, the metrics as prometheus-client parses them;
- ``syncd`` as users run it: a command (``run_syncd``), ``syncd serve`` started,
  awaited and stopped (``SyncdServe``, ``syncd_serving``);
- a TCP proxy that can cut the database off or stall it;
- putting events in the inbox, applying them, reading the tables back;
- the simulated store wired to the daemon (``rig``) and the comparison of the
  database with the store's truth.

The proxy stands between syncd and PostgreSQL so a test can take the
database away (every open connection closed, new ones reset at once) and
give it back, without touching the server other tests share; or stall it
(connections stay open, nothing passes either way: a frozen server or a
dead network path, which no error reveals) and let it flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncd import apply, inbox
from syncd.app import create_app
from syncd.config import Settings, StoreConfig, load_settings
from syncd.db.models import NORMALIZED, metadata
from syncd.demo import compare_with_truth
from syncd.inbox import ingest
from syncd.reconcile import RunReport, reconcile_store
from syncd.shoperti import wire
from syncd.shoperti.client import ShopertiClient
from syncd.simulator import Faults, SimulatedStore, Truth
from syncd.vocabulary import EventSource
from syncd.worker import Report, add_and_apply, apply_pending
from tests.conftest import TestDatabase

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
EVENTS = metadata.tables["events"]
STORE = StoreConfig("default")


# --- waiting, ports ------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], T | None],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the daemon's app on a real port -------------------------------------------------------


@contextmanager
def serving(app: Any, *, port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) on 127.0.0.1; yields the base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(30)
        loop.close()


@contextmanager
def daemon(
    url: str, engine: Engine, *, run_worker: bool = True, **env: str
) -> Iterator[httpx.Client]:
    """The daemon's app on a free port, and a client for it."""
    settings = load_settings({"SYNCD_DATABASE_URL": url, **env})
    app = create_app(settings, engine, run_worker=run_worker, run_scheduler=False)
    with serving(app) as base, httpx.Client(base_url=base, timeout=10) as client:
        yield client


def stored(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        found = [dict(row._mapping) for row in conn.execute(EVENTS.select())]
    return sorted(found, key=lambda row: (row["store"], row["id"]))


def assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    reason = response.json()["error"]
    assert isinstance(reason, str) and reason
    return reason


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> tuple[str, Samples]:
    """The /metrics text and its samples, read with prometheus-client's own parser."""
    answer = httpx.get(f"{base}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return answer.text, samples


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def settings_for(url: str, **env: str) -> Settings:
    return load_settings({"SYNCD_DATABASE_URL": url, **env})


# The key StubApi is given in the ops suites.
STUB_API_KEY = "sk_live_ops_5c2f9e1d7a"


class StubApi:
    """The part of Shoperti's API the daemon calls: events by id, empty listings."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.events: dict[str, dict[str, Any]] = {}
        self.authorizations: set[str] = set()

    def app(self) -> Starlette:
        def authorized(request: Request) -> bool:
            given = request.headers.get("authorization", "")
            self.authorizations.add(given)
            return given == f"Bearer {self.key}"

        async def one(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            event = self.events.get(request.path_params["event_id"])
            if event is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse({"data": event})

        async def listing(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            page = {"total": 0, "count": 0, "per_page": 100, "current_page": 1, "total_pages": 1}
            return JSONResponse({"data": [], "meta": {"pagination": page}})

        return Starlette(
            routes=[
                Route("/v1/events/{event_id}", one),
                *(Route(f"/v1/{name}", listing) for name in ("events", "orders", "customers")),
            ]
        )


# --- the cuttable TCP proxy -----------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; :meth:`cut` takes the target away.

    While cut, every connection it held is closed and every new one is reset
    as soon as it is accepted (the client sees the server refuse it);
    :meth:`restore` forwards again. While stalled (:meth:`stall`), every
    connection stays open and new ones are accepted, but no byte is passed on
    until :meth:`resume`. Threads only: it works under any event loop.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._open = True
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopping = False
        self.refused = 0
        self.forwarded = 0
        self._thread = threading.Thread(target=self._accept, name="db-proxy", daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def url(self, database_url: str) -> str:
        """``database_url`` pointed at the proxy instead of the server."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def cut(self) -> None:
        with self._lock:
            self._open = False
            live, self._live = self._live, set()
        for sock in live:
            _hard_close(sock)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._stopping = True
        self._flowing.set()
        self.cut()
        if self._thread.is_alive():
            self._thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                is_open = self._open
            if not is_open:
                self.refused += 1
                _hard_close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=3)
            except OSError:
                _hard_close(client)
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if not self._open:  # cut while connecting
                    _hard_close(client)
                    _hard_close(upstream)
                    continue
                self._live.update((client, upstream))
                self.forwarded += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                self._flowing.wait()
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._live.discard(source)
                self._live.discard(sink)
            _hard_close(source)
            _hard_close(sink)


def _hard_close(sock: socket.socket) -> None:
    """Close with a reset, so the peer notices at once."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- syncd as a subprocess --------------------------------------------------------------


def syncd_env(database_url: str, **variables: str) -> dict[str, str]:
    """The environment of a ``syncd`` subprocess: ours without any SYNCD_*
    variable, plus ``database_url`` and ``variables``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNCD_")}
    env["SYNCD_DATABASE_URL"] = database_url
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


def run_syncd(
    *args: str, env: Mapping[str, str], cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m syncd ARGS`` with ``env`` (and this PATH unless ``env`` has
    one), in ``cwd``; output captured as text."""
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class SyncdServe:
    """``syncd serve`` in a subprocess, as users run it; its output (the logs)
    goes to ``log_path``, appended across restarts.

    :meth:`start` waits until it answers; :meth:`terminate` stops it the way
    systemd does (SIGTERM, then SIGKILL only if it has not exited in time);
    :meth:`kill9` ends it the way a crash does. Use :func:`syncd_serving`, or
    call :meth:`kill` in a ``finally``."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path = REPO,
        nofile: int | None = None,
    ) -> None:
        self.env = dict(env)  # as given: the process sees nothing else
        self.cwd = cwd
        self.nofile = nofile  # a lower limit of open files for the process (RLIMIT_NOFILE)
        self.port = int(self.env["SYNCD_PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, until: Callable[[], object] | None = None, timeout: float = 30) -> None:
        """Start it and wait until ``until()`` is true (by default: until
        /healthz answers 200); fails with the log if it exits first or
        ``timeout`` seconds pass."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "syncd", "serve"],
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=self._limit if self.nofile is not None else None,
            )
        self.starts += 1
        ready = until or self.healthy
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"syncd serve exited with {self.process.returncode}:\n{self.logs()[-3000:]}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"syncd serve did not start:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def healthy(self) -> bool:
        """/healthz answers 200."""
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        return False

    def _limit(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def kill9(self) -> None:
        """SIGKILL: no graceful anything, the way a crash or the OOM killer ends it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the exit; SIGKILL only after ``timeout`` seconds.
        Returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return int(self.process.returncode)

    def kill(self) -> None:
        self.kill9()

    def logs(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def syncd_serving(
    env: Mapping[str, str],
    log_path: Path,
    *,
    cwd: Path = REPO,
    until: Callable[[], object] | None = None,
    timeout: float = 30,
    stop_timeout: float = 30,
) -> Iterator[SyncdServe]:
    """``syncd serve`` started and awaited (:meth:`SyncdServe.start`); on the way
    out, if it still runs, SIGTERM and a wait of ``stop_timeout`` seconds,
    SIGKILL only if that passes. Its exit code is then ``returncode``."""
    daemon = SyncdServe(env, log_path, cwd=cwd)
    try:
        daemon.start(until=until, timeout=timeout)
        yield daemon
    finally:
        if daemon.process is not None:
            daemon.terminate(stop_timeout)


# --- reading the database ------------------------------------------------------------------


def event_ids(engine: Engine, store: str = "default", **where: Any) -> set[str]:
    query = select(EVENTS.c.id).where(EVENTS.c.store == store)
    for column, value in where.items():
        query = query.where(EVENTS.c[column] == value)
    with engine.connect() as conn:
        return set(conn.scalars(query))


def event_counts(engine: Engine, column: str = "status", store: str = "default") -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(EVENTS.c[column], func.count())
            .where(EVENTS.c.store == store)
            .group_by(EVENTS.c[column])
        ).all()
    return {str(row[0]): int(row[1]) for row in rows}


def settled(engine: Engine, store: str = "default") -> bool:
    """No event of ``store`` is pending."""
    return event_counts(engine, store=store).get("pending", 0) == 0


def fingerprint(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the normalized tables, sorted: equal fingerprints, equal tables."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name in NORMALIZED:
            table = metadata.tables[name]
            columns = [c for c in table.columns if c.name != "synced_at"]
            rows = conn.execute(select(*columns)).all()
            found[name] = sorted((tuple(map(repr, row)) for row in rows), key=repr)
    return found


# --- the inbox and the apply path ----------------------------------------------------------


def deliver(engine: Engine, *payloads: Mapping[str, Any], store: str = STORE.name) -> None:
    """Put events into the inbox, as the receiver does."""
    ingest(engine, store, payloads, source=EventSource.WEBHOOK, verified=False)


def apply_all(
    engine: Engine, store: StoreConfig = STORE, *, limit: int = 200, max_attempts: int = 3
) -> Report:
    """Run the worker's apply step until it finds nothing ready; sums the reports."""
    total = Report()
    while True:
        report = apply_pending(engine, store, limit=limit, max_attempts=max_attempts)
        if report.claimed == 0:
            return total
        for name in ("applied", "ignored", "failed", "retried"):
            setattr(total, name, getattr(total, name) + getattr(report, name))


def rows(engine: Engine, name: str, *, store: str | None = None) -> list[dict[str, Any]]:
    """All rows of a table (but ``synced_at``), sorted by key in Python so the
    order is the same whatever the database's collation."""
    table = metadata.tables[name]
    query = select(table)
    if store is not None:
        query = query.where(table.c.store == store)
    with engine.connect() as conn:
        found = [dict(row._mapping) for row in conn.execute(query)]
    for row in found:
        row.pop("synced_at", None)
    key = [column.name for column in table.primary_key.columns]
    return sorted(found, key=lambda row: tuple(str(row[name]) for name in key))


def snapshot(engine: Engine, *, store: str | None = None) -> dict[str, list[dict[str, Any]]]:
    return {name: rows(engine, name, store=store) for name in NORMALIZED}


def event_status(engine: Engine, event_id: str) -> tuple[str, str | None]:
    events = metadata.tables["events"]
    with engine.connect() as conn:
        row = conn.execute(
            select(events.c.status, events.c.last_error).where(events.c.id == event_id)
        ).one()
    return row.status, row.last_error


def order_row(engine: Engine, order_id: str = "ord_1") -> dict[str, Any]:
    [row] = [row for row in rows(engine, "orders") if row["id"] == order_id]
    return row


def customer_row(engine: Engine, customer_id: str = "cus_1") -> dict[str, Any]:
    [row] = [row for row in rows(engine, "customers") if row["id"] == customer_id]
    return row


def assert_all_times_utc(tables: Mapping[str, list[dict[str, Any]]]) -> None:
    for name, table_rows in tables.items():
        for row in table_rows:
            for column, value in row.items():
                # The *_local columns hold the store's wall-clock time, no zone.
                if isinstance(value, datetime) and not column.endswith("_local"):
                    assert value.utcoffset() == timedelta(0), (name, column, value)


def put_event(
    engine: Engine,
    event: dict[str, Any],
    *,
    state: str,
    minutes_ago: float = 0,
    verified: bool = False,
    attempts: int = 0,
    error: str | None = None,
) -> None:
    """Store ``event`` in the inbox as if it had reached ``state`` ``minutes_ago``."""
    now = inbox.utcnow() - timedelta(minutes=minutes_ago)
    row = inbox.event_row(
        "default", wire.parse_event(event), source=EventSource.WEBHOOK, verified=verified
    )
    row.update(
        status=state,
        received_at=now,
        processed_at=None if state == "pending" else now,
        attempts=attempts,
        last_error=error,
    )
    with engine.begin() as conn:
        inbox.put(conn, [row])


DELIVERIES = ("in order", "reversed", "one batch", "one fetched page")


def apply_as(engine: Engine, events: Sequence[Mapping[str, Any]], delivery: str) -> None:
    """Apply ``events`` one by one in the given order, in reverse, all in one
    batch, or as a page read from the API (stored and applied at once)."""
    if delivery == "one batch":
        deliver(engine, *events)
        apply_all(engine)
        return
    if delivery == "one fetched page":
        # Shoperti's events, stored and applied at once (snapshots: test_version_order).
        add_and_apply(engine, STORE, events, source=EventSource.RECONCILE, snapshot=False)
        return
    for event in events if delivery == "in order" else reversed(events):
        deliver(engine, event)
        apply_all(engine)


def write_batches(
    db: Any, events: Sequence[Mapping[str, Any]], batches: Iterable[Sequence[Mapping[str, Any]]]
) -> None:
    """On emptied tables, put ``events`` in the inbox (where every applied event
    is), then apply each batch as the worker does, one transaction per batch."""
    db.reset()
    deliver(db.engine, *events)
    engine, now = db.engine, datetime.now(UTC)
    for batch in batches:
        stored = [apply.StoredEvent(str(e["id"]), str(e["type"]), e) for e in batch]
        collected, outcomes = apply.collect(STORE.name, stored)
        assert {o.status for o in outcomes.values()} == {"applied"}
        with engine.begin() as conn:
            apply.write(conn, collected, now)


def chronological(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (datetime.fromisoformat(e["created_at"]), e["id"]))


REFUSED_SKU = "BOOM"
REFUSALS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    # A trigger makes a line item with sku BOOM break the NOT NULL of its position.
    "not null": {
        "sqlite": (
            [
                "CREATE TRIGGER syncd_test_refuse AFTER INSERT ON order_line_items "
                f"WHEN NEW.sku = '{REFUSED_SKU}' BEGIN UPDATE order_line_items SET position = NULL "
                "WHERE store = NEW.store AND order_id = NEW.order_id AND id = NEW.id; END"
            ],
            ["DROP TRIGGER syncd_test_refuse"],
        ),
        "postgresql": (
            [
                "CREATE FUNCTION syncd_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.sku = '{REFUSED_SKU}' THEN NEW.position := NULL; END IF; "
                "RETURN NEW; END $$",
                "CREATE TRIGGER syncd_test_refuse BEFORE INSERT ON order_line_items "
                "FOR EACH ROW EXECUTE FUNCTION syncd_test_refuse()",
            ],
            [
                "DROP TRIGGER syncd_test_refuse ON order_line_items",
                "DROP FUNCTION syncd_test_refuse()",
            ],
        ),
        "mariadb": (
            [
                "CREATE TRIGGER syncd_test_refuse BEFORE INSERT ON order_line_items FOR EACH ROW "
                f"BEGIN IF NEW.sku = '{REFUSED_SKU}' THEN SET NEW.position = NULL; END IF; END"
            ],
            ["DROP TRIGGER syncd_test_refuse"],
        ),
    },
    # A CHECK constraint refuses sku BOOM (SQLite cannot add one to a table: a
    # trigger raises the same error there).
    "check": {
        "sqlite": (
            [
                "CREATE TRIGGER syncd_test_refuse BEFORE INSERT ON order_line_items "
                f"WHEN NEW.sku = '{REFUSED_SKU}' "
                "BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: syncd_test_refuse'); END"
            ],
            ["DROP TRIGGER syncd_test_refuse"],
        ),
        "postgresql": (
            [
                "ALTER TABLE order_line_items ADD CONSTRAINT syncd_test_refuse "
                f"CHECK (sku <> '{REFUSED_SKU}') NOT VALID"
            ],
            ["ALTER TABLE order_line_items DROP CONSTRAINT syncd_test_refuse"],
        ),
        "mariadb": (
            [
                "ALTER TABLE order_line_items ADD CONSTRAINT syncd_test_refuse "
                f"CHECK (sku <> '{REFUSED_SKU}')"
            ],
            ["ALTER TABLE order_line_items DROP CONSTRAINT syncd_test_refuse"],
        ),
    },
}
# What the database's message names, so an error is known to come from it.
REFUSAL_NAMES = {"not null": "position", "check": "syncd_test_refuse"}


@contextmanager
def database_refusing(db: Any, refusal: str = "not null") -> Iterator[None]:
    """The database itself refuses to store a line item whose sku is ``REFUSED_SKU``:
    a write error that no parser can foresee. Removed afterwards, whatever happens."""
    install, remove = REFUSALS[refusal][db.kind]
    with db.engine.begin() as conn:
        for statement in install:
            conn.execute(text(statement))
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            for statement in remove:
                conn.execute(text(statement))


# --- the simulated store wired to the daemon -----------------------------------------------


RIG_KEY = "sk_test_reconcile"
RIG_TOKEN = "tok-reconcile"


@dataclass
class Rig:
    """The simulated store (its API and webhooks) and the daemon's app serving them."""

    store: SimulatedStore
    settings: Settings
    url: str  # the daemon's base URL

    def reconcile(self, db: TestDatabase, **kwargs: Any) -> RunReport:
        async def run() -> RunReport:
            config = self.settings.store()
            async with ShopertiClient(self.store.api_url, RIG_KEY) as client:
                return await reconcile_store(db.engine, self.settings, config, client, **kwargs)

        return asyncio.run(run())


def rig_env(db: TestDatabase, api_url: str, **extra: str) -> dict[str, str]:
    return {
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_API_URL": api_url,
        "SYNCD_API_KEY": RIG_KEY,
        "SYNCD_WEBHOOK_SECRET": RIG_TOKEN,
        "SYNCD_RECONCILE_INTERVAL": "0",
        **extra,
    }


@contextmanager
def rig(
    db: TestDatabase,
    *,
    faults: Faults | None = None,
    webhooks: bool = True,
    retention: int = 30 * 86400,
    seed: int = 11,
    **env: str,
) -> Iterator[Rig]:
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/shoperti?token={RIG_TOKEN}" if webhooks else None
    store = SimulatedStore(
        seed=seed,
        api_key=RIG_KEY,
        webhook_url=hook,
        faults=faults,
        time_scale=1 / 36000,
        retention_seconds=retention,
    )
    api_url = store.start_in_thread()
    try:
        settings = load_settings(rig_env(db, api_url, **env))
        app = create_app(settings, db.engine, run_scheduler=False)
        with serving(app, port=port) as base:
            yield Rig(store, settings, base)
    finally:
        store.stop_thread()


def all_applied(db: TestDatabase) -> bool:
    """No event is pending."""
    with db.engine.connect() as conn:
        pending = conn.scalar(
            select(func.count()).select_from(EVENTS).where(EVENTS.c.status == "pending")
        )
    return int(pending or 0) == 0


def truth_problems(engine: Engine, truth: Truth, store: str = "default") -> list[str]:
    """How the tables of ``store`` differ from the simulated store's ``truth``
    (``syncd demo``'s comparison; none: equal)."""
    return compare_with_truth(engine, store, truth.orders, truth.customers)


def assert_equals_truth(engine: Engine, store: SimulatedStore) -> None:
    """Once no event is pending, the tables equal the simulated store's truth."""
    wait_for(lambda: settled(engine), timeout=30, message="no pending event left")
    problems = truth_problems(engine, store.truth())
    assert problems == [], problems[:20]
