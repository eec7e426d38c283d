"""`syncd serve` as systemd runs it: a process, told to stop with SIGTERM.

A burst of webhooks from several threads; SIGTERM while it is under way.
The process must exit 0 after telling systemd READY=1 and then STOPPING=1,
every event that was answered 2xx must be committed, and nothing may be
half-applied: each event is pending or applied, and each applied order event
left its order, its status-history row and the line items of the version
that won.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from syncd.db.models import Event, Order, OrderLineItem, OrderStatusHistory
from syncd.shoperti import wire
from tests.factories import EMAIL_A, posted_order
from tests.support import free_port, syncd_serving

SECRET = "whsec_serve_93a1c7e5"
THREADS = 6
EVENTS_PER_THREAD = 50
ORDERS = 30
GRACE_SECONDS = 3


def receive_until(
    sock: socket.socket, wanted: str, process: subprocess.Popen[bytes], timeout: float
) -> list[str]:
    """Datagrams until one holds the line ``wanted``; fails if the process dies first."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            assert process.poll() is None or got, f"syncd serve exited ({process.returncode})"
            continue
        if wanted in got[-1].splitlines():
            return got
    raise AssertionError(f"no {wanted} from syncd serve within {timeout} s (got {got})")


def burst() -> list[list[dict[str, Any]]]:
    """Per thread, a run of order events: ORDERS orders each changing several
    times, with a different number of line items in each version."""
    base = datetime(2026, 3, 1, 12, 0, 0)
    plans: list[list[dict[str, Any]]] = [[] for _ in range(THREADS)]
    for seq in range(THREADS * EVENTS_PER_THREAD):
        updated = (base + timedelta(seconds=seq)).isoformat() + "-06:00"
        event = posted_order(
            f"evt_serve_{seq:04d}",
            f"ord_{seq % ORDERS:03d}",
            updated_at=updated,
            items=1 + seq % 4,
            event_type="order.created" if seq < ORDERS else "order.updated",
        )
        plans[seq % THREADS].append(event)
    return plans


def test_sigterm_mid_burst_exits_0_with_every_acknowledged_event_committed(
    db: Any, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, notify_path = notify_socket
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_PORT": str(port),
        "SYNCD_SHUTDOWN_GRACE": str(GRACE_SECONDS),
        "SYNCD_WEBHOOK_SECRET": SECRET,
        "SYNCD_WORKER_BATCH_SIZE": "25",
        "NOTIFY_SOCKET": notify_path,
        "PYTHONFAULTHANDLER": "1",
    }
    log_path = tmp_path / "serve.log"
    with syncd_serving(env, log_path, cwd=tmp_path) as daemon:
        process = daemon.process
        assert process is not None
        ready = receive_until(sock, "READY=1", process, timeout=30)
        assert f"STATUS=receiving webhooks on 127.0.0.1:{port}" in ready[-1]

        # Refused deliveries log a warning each; it must carry the request id.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            wrong = [
                client.post("/webhooks/shoperti?token=wrong", json=posted_order(f"evt_w{n}", "o"))
                for n in range(3)
            ]
        assert [answer.status_code for answer in wrong] == [401] * 3

        plans = burst()
        answers: dict[str, int | str] = {}
        lock = threading.Lock()
        acknowledged = threading.Semaphore(0)
        signalled = threading.Event()
        sent_after_signal = 0

        def send(events: list[dict[str, Any]]) -> None:
            nonlocal sent_after_signal
            url = f"http://127.0.0.1:{port}/webhooks/shoperti?token={SECRET}"
            with httpx.Client(timeout=20) as client:
                for event in events:
                    late = signalled.is_set()
                    try:
                        answer = client.post(url, json=event)
                        outcome: int | str = answer.status_code
                        if outcome != 200:
                            outcome = f"{outcome} {answer.text}"
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    with lock:
                        answers[event["id"]] = outcome
                        sent_after_signal += late
                    if outcome == 200:
                        acknowledged.release()

        senders = [threading.Thread(target=send, args=(plan,)) for plan in plans]
        for sender in senders:
            sender.start()
        # Mid-burst: a third of the events are acknowledged, the rest still to come.
        for _ in range(THREADS * EVENTS_PER_THREAD // 3):
            assert acknowledged.acquire(timeout=30), "the burst stalled"
        process.send_signal(signal.SIGTERM)
        signalled.set()
        for sender in senders:
            sender.join(60)
            assert not sender.is_alive()
        try:
            returncode = process.wait(timeout=GRACE_SECONDS + 30)
        except subprocess.TimeoutExpired:
            # Where is it stuck? PYTHONFAULTHANDLER dumps every thread on SIGABRT.
            process.send_signal(signal.SIGABRT)
            process.wait(10)
            pytest.fail("syncd serve did not stop:\n" + log_path.read_text()[-6000:])

    log_lines = log_path.read_text().splitlines()
    assert returncode == 0, log_lines[-5:]
    stopping = receive_until(sock, "STOPPING=1", process, timeout=5)
    assert all("READY=1" not in message.splitlines() for message in stopping)
    assert sent_after_signal > 0, "SIGTERM came after the burst, not during it"

    ok = {event_id for event_id, outcome in answers.items() if outcome == 200}
    assert len(answers) == THREADS * EVENTS_PER_THREAD
    # Not acknowledged is allowed (the platform retries), a 2xx never is; 503 is
    # what a failed commit answers (on MariaDB, now and then, a deadlock between
    # the inbox's insert and the worker's update).
    refused = {"ConnectError", "RemoteProtocolError", "ReadError", "ReadTimeout"}
    unexpected = {
        o
        for o in answers.values()
        if o != 200 and o not in refused and not str(o).startswith("503")
    }
    assert not unexpected, (unexpected, [r for r in log_lines if "warning" in r][:5])
    with db.engine.connect() as conn:
        events = {row.id: row for row in conn.execute(select(Event))}
        orders = {row.id: row for row in conn.execute(select(Order))}
        items: dict[str, set[str]] = {}
        for item in conn.execute(select(OrderLineItem.order_id, OrderLineItem.id)):
            items.setdefault(item.order_id, set()).add(item.id)
        history = {row.event_id for row in conn.execute(select(OrderStatusHistory.event_id))}

    # Every 2xx is committed, and nothing was committed that was not sent.
    assert ok <= set(events), sorted(ok - set(events))[:5]
    assert set(events) <= set(answers)
    # Nothing half-applied.
    assert {row.status for row in events.values()} <= {"pending", "applied"}
    applied = {event_id for event_id, row in events.items() if row.status == "applied"}
    assert applied, "the worker applied nothing before the stop"
    assert history == applied  # a status-history row exactly for each applied event
    for event_id in applied:
        data = events[event_id].payload["data"]
        order = orders[data["id"]]
        assert order.updated_at >= wire.timestamp(data["updated_at"], "updated_at")
    assert set(orders) <= {events[event_id].resource_id for event_id in applied}
    for order_id, order in orders.items():
        winner = events[order.last_event_id]
        assert winner.status == "applied" and winner.resource_id == order_id
        # The line items are those of the version that won, all of them.
        assert items.get(order_id, set()) == {i["id"] for i in winner.payload["data"]["line_items"]}
        assert order.email == EMAIL_A

    print(
        f"{db.kind}: {len(ok)} acknowledged, {len(answers) - len(ok)} not "
        f"({sum(str(o).startswith('503') for o in answers.values())} of them 503), "
        f"{sent_after_signal} sent after SIGTERM; {len(applied)} applied, "
        f"{len(events) - len(applied)} left pending for the next start"
    )

    # One JSON object per line, a request id on each answer, no secret, no e-mail.
    records = [json.loads(line) for line in log_lines]
    answered = [r for r in records if r["event"] == "webhook.answered"]
    refused_ids = [r.get("request_id") for r in answered if r["status"] == 401]
    assert refused_ids == [answer.headers["x-request-id"] for answer in wrong]
    assert all(len(r.get("request_id", "")) == 32 for r in answered)
    lifecycle = ("serve.ready", "serve.stopping", "serve.stopped")
    assert [r["event"] for r in records if r["event"] in lifecycle] == list(lifecycle)
    text = "\n".join(log_lines)
    assert SECRET not in text and EMAIL_A not in text


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_applying_runs_in_a_child_that_reports_back_and_dies_with_the_daemon(
    db: Any, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_PORT": str(port),
        "SYNCD_WEBHOOK_SECRET": SECRET,
    }
    with syncd_serving(env, tmp_path / "serve.log", cwd=tmp_path) as daemon:
        process = daemon.process
        assert process is not None
        with httpx.Client(base_url=daemon.base_url, timeout=10) as client:
            for n in range(20):
                event = posted_order(f"evt_child_{n}", f"ord_{n % 4}", items=1 + n % 3)
                answer = client.post(f"/webhooks/shoperti?token={SECRET}", json=event)
                assert answer.status_code == 200
            deadline = time.monotonic() + 30
            while True:
                with db.engine.connect() as conn:
                    pending = conn.scalars(select(Event.id).where(Event.status != "applied")).all()
                if not pending:
                    break
                assert time.monotonic() < deadline, f"still pending: {pending}"
                time.sleep(0.05)

            def applied_in_metrics() -> float:
                return sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in client.get("/metrics").text.splitlines()
                    if line.startswith("syncd_events_processed_total{")
                    and 'status="applied"' in line
                )

            # The child's reports reach the daemon's /metrics, just after its
            # commit (the database can show the batch a moment before).
            deadline = time.monotonic() + 10
            while (applied := applied_in_metrics()) < 20:
                assert time.monotonic() < deadline, f"{applied} applied in /metrics"
                time.sleep(0.05)
            assert applied == 20
        workers = [pid for pid in children(process.pid) if alive(pid)]
        assert workers, "no child process applies the events"
        process.kill()  # no chance to stop its child
        process.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "the apply process outlived the daemon"
            time.sleep(0.1)
