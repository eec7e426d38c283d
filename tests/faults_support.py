"""Helpers for the fault tests: a TCP proxy that can cut the database off,
``syncd`` subprocesses (the daemon as users run it), and small readers of
the database the tests assert on.

The proxy stands between syncd and PostgreSQL so a test can take the
database away (every open connection closed, new ones reset at once) and
give it back, without touching the server other tests share; or stall it
(connections stay open, nothing passes either way: a frozen server or a
dead network path, which no error reveals) and let it flow again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url

from syncd.db.models import metadata

REPO = Path(__file__).resolve().parent.parent
EVENTS = metadata.tables["events"]
NORMALIZED = (
    "orders",
    "order_line_items",
    "order_addresses",
    "order_status_history",
    "customers",
    "customer_addresses",
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
    args: list[str], env: Mapping[str, str], *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m syncd ARGS``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        env=dict(env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class SyncdServe:
    """``syncd serve`` in a subprocess; its stderr (the logs) goes to ``log_path``,
    appended across restarts. Always :meth:`kill` it in a ``finally``."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, *, nofile: int | None = None
    ) -> None:
        self.env = dict(env)
        self.nofile = nofile  # a lower limit of open files for the process (RLIMIT_NOFILE)
        self.port = int(self.env["SYNCD_PORT"])
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *, timeout: float = 30) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "syncd", "serve"],
                env=self.env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=self._limit if self.nofile is not None else None,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"syncd serve exited with {self.process.returncode}:\n{self.logs()[-3000:]}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"syncd serve did not start:\n{self.logs()[-3000:]}")
            time.sleep(0.05)

    def _limit(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no graceful anything, the way a crash or the OOM killer ends it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def terminate(self, timeout: float = 30) -> int:
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
def syncd_serving(env: Mapping[str, str], log_path: Path) -> Iterator[SyncdServe]:
    daemon = SyncdServe(env, log_path)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.kill()


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
