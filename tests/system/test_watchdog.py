"""The systemd watchdog: WATCHDOG=1 at half of $WATCHDOG_USEC, only while the
daemon works.

A unix datagram socket stands in for systemd's $NOTIFY_SOCKET. In-process
(the app served on a real port): pings arrive; a blocked event loop stops
them until it turns again; a dead inbox writer stops them for good. As a
process (``syncd serve``): a stopped apply process (SIGSTOP) stops them while
the receiver still answers, and they resume on SIGCONT. The real systemd
acting on a missing ping is in test_systemd.py.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.app import create_app
from syncd.db.engine import upgrade
from syncd.ops import watchdog
from tests.support import free_port, serving, settings_for, syncd_serving, wait_for

INTERVAL_USEC = 200_000  # pings every 0.1 s


class Pings:
    """Receives datagrams on a socket like $NOTIFY_SOCKET; keeps WATCHDOG=1 arrival times."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(0.05)

    def collect(self, seconds: float) -> list[float]:
        """Arrival times of the pings in the next ``seconds``."""
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            if "WATCHDOG=1" in message.splitlines():
                got.append(time.monotonic())
        return got

    def wait_for_ping(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.collect(0.1)
            if got:
                return got[0]
        raise AssertionError(f"no WATCHDOG=1 within {timeout} s")


@pytest.fixture
def pings(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pings]:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", str(INTERVAL_USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield Pings(sock)


def test_interval_is_half_of_watchdog_usec_and_only_for_our_pid() -> None:
    pid = str(os.getpid())
    assert watchdog.interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog.interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog.interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog.interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog.interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog.interval({}) is None


def test_a_blocked_event_loop_stops_the_pings_until_it_turns_again(
    db: Any, pings: Pings, captured_logs: io.StringIO
) -> None:
    app = create_app(settings_for(db.url), db.engine, run_scheduler=False)
    daemon = app.state.daemon
    with serving(app) as base:
        pings.wait_for_ping(10)
        before = pings.collect(1.0)
        assert len(before) >= 5, before  # about 10 in a second
        assert max(b - a for a, b in itertools.pairwise(before)) < 0.5

        # Something blocks the loop for 2 s (a synchronous call in a coroutine).
        assert daemon.watchdog is not None
        loop = daemon.watchdog.get_loop()
        blocked_at = time.monotonic()
        loop.call_soon_threadsafe(time.sleep, 2.0)
        during = pings.collect(3.0)
        after_block = [t for t in during if t > blocked_at + 0.3]
        assert after_block, "pings did not resume once the loop turned again"
        assert after_block[0] - blocked_at >= 1.9, after_block[0] - blocked_at
        gaps = [b - a for a, b in itertools.pairwise(during)]
        assert max([after_block[0] - blocked_at, *gaps]) >= 1.9

        # The inbox writer dies: no more pings, though the loop turns.
        loop.call_soon_threadsafe(daemon.committer._task.cancel)
        wait_for(lambda: not daemon.committer.running, message="the inbox writer to end")
        pings.collect(0.3)  # one already on its way
        assert pings.collect(1.5) == []
        assert httpx.get(f"{base}/healthz").status_code == 200  # the loop does turn
    records = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    withheld = [r for r in records if r["event"] == "watchdog.withheld"]
    assert [r["reason"] for r in withheld] == ["the inbox writer is not running"]


def test_a_dead_worker_loop_stops_the_pings(
    db: Any, pings: Pings, captured_logs: io.StringIO
) -> None:
    app = create_app(settings_for(db.url), db.engine, run_scheduler=False)
    daemon = app.state.daemon
    with serving(app):
        pings.wait_for_ping(10)
        assert daemon.watchdog is not None and not daemon.worker.crashed
        daemon.watchdog.get_loop().call_soon_threadsafe(daemon.worker._task.cancel)
        wait_for(lambda: daemon.worker.crashed, message="the worker loop to end")
        pings.collect(0.3)
        assert pings.collect(1.5) == []
    records = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    withheld = [r["reason"] for r in records if r["event"] == "watchdog.withheld"]
    assert withheld == ["the worker loop has ended"]


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def apply_child(pid: int) -> int | None:
    for child in children(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"multiprocessing.spawn" in command and b"resource_tracker" not in command:
            return child
    return None


def test_a_stopped_apply_process_stops_the_pings_of_syncd_serve(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    url = f"sqlite:///{tmp_path / 'syncd.db'}"
    upgrade(url)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SYNCD_DATABASE_URL": url,
        "SYNCD_PORT": str(port),
        "NOTIFY_SOCKET": path,
        "WATCHDOG_USEC": "1000000",  # pings every 0.5 s
    }
    pings = Pings(sock)
    child = None
    log_path = tmp_path / "serve.log"
    with syncd_serving(env, log_path, cwd=tmp_path) as daemon:
        process = daemon.process
        assert process is not None
        try:
            pings.wait_for_ping(30)
            child = wait_for(lambda: apply_child(process.pid), message="the apply process")
            assert len(pings.collect(1.6)) >= 2
            os.kill(child, signal.SIGSTOP)
            stopped_at = time.monotonic()
            # Silent for longer than the patience (5 s) plus a ping interval: no pings after.
            got = pings.collect(7.0)
            assert got == [] or got[-1] - stopped_at < 6.0, [t - stopped_at for t in got]
            assert pings.collect(1.5) == []
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert answer.status_code == 200  # the receiver still answers
            os.kill(child, signal.SIGCONT)
            resumed = pings.wait_for_ping(5) - stopped_at
            assert resumed > 5.0
        finally:
            if child is not None:
                os.kill(child, signal.SIGCONT)
    assert daemon.returncode == 0, daemon.logs()[-2000:]
    lines = [json.loads(line) for line in daemon.logs().splitlines() if line.startswith("{")]
    events = [(r["event"], r.get("reason", "")) for r in lines if r["event"].startswith("watchdog")]
    assert events[0] == ("watchdog.started", "")
    assert events[1][0] == "watchdog.withheld"
    assert events[1:3] == [
        ("watchdog.withheld", "the apply process has not answered for 5 s"),
        ("watchdog.resumed", "the apply process has not answered for 5 s"),
    ]
