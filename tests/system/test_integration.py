"""End to end: the simulated store's webhooks over real HTTP into the daemon,
on SQLite, PostgreSQL and MariaDB; and `syncd demo` as a new user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from syncd.app import create_app
from syncd.config import load_settings
from syncd.db.models import Event, OrderLineItem
from syncd.inbox import utcnow
from syncd.simulator import Faults, SimulatedStore
from syncd.state import EVENTS_CURSOR, write_state
from tests.conftest import TestDatabase
from tests.support import free_port, serving, truth_problems, wait_for

TOKEN = "tok-burst"


def test_a_burst_of_webhooks_ends_equal_to_the_store(db: TestDatabase) -> None:
    port = free_port()
    store = SimulatedStore(
        seed=5,
        api_key="sk_burst",
        faults=Faults(duplicate_rate=0.05, reorder_window=50),
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shoperti?token={TOKEN}",
        delivery_concurrency=32,
    )
    store.start_in_thread()
    try:
        settings = load_settings(
            {
                "SYNCD_DATABASE_URL": db.url,
                "SYNCD_WEBHOOK_SECRET": TOKEN,
                "SYNCD_RECONCILE_INTERVAL": "0",
            }
        )
        with serving(create_app(settings, db.engine, run_scheduler=False), port=port):
            # ~1,350 webhooks from 32 concurrent senders, duplicated and
            # reordered; 600 orders took 55 s per database on a slow day.
            emitted = store.run(store.sell(orders=300), timeout=120)
            store.run(store.wait_deliveries(timeout=120), timeout=130)
            assert emitted >= 1000 and not store.lost_event_ids

            def pending() -> int:
                with db.engine.connect() as conn:
                    return int(
                        conn.scalar(select(func.count()).where(Event.status == "pending")) or 0
                    )

            wait_for(lambda: pending() == 0, timeout=120, message="every event applied")
    finally:
        store.stop_thread()
    truth = store.truth()
    assert truth_problems(db.engine, truth) == []
    with db.engine.connect() as conn:
        stored = conn.scalar(select(func.count()).select_from(Event))
        failed = conn.scalar(select(func.count()).where(Event.status == "failed"))
        items = conn.scalar(select(func.count()).select_from(OrderLineItem))
    assert stored == emitted and failed == 0
    live_items = sum(len(order.get("line_items") or []) for order in truth.orders.values())
    assert items == live_items


def test_demo_runs_as_a_new_user_would(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "demo", "--orders", "80", "--dir", str(tmp_path / "d")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: the database equals the store's truth" in result.stdout
    assert "recovered by reconcile" in result.stdout
    assert (tmp_path / "d" / "syncd.db").is_file()


def test_the_scheduled_reconcile_recovers_lost_webhooks_by_itself(db: TestDatabase) -> None:
    port = free_port()
    store = SimulatedStore(
        seed=8,
        api_key="sk_sched",
        faults=Faults(drop_rate=0.3),
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shoperti?token={TOKEN}",
    )
    api_url = store.start_in_thread()
    try:
        settings = load_settings(
            {
                "SYNCD_DATABASE_URL": db.url,
                "SYNCD_WEBHOOK_SECRET": TOKEN,
                "SYNCD_API_URL": api_url,
                "SYNCD_API_KEY": "sk_sched",
                "SYNCD_RECONCILE_INTERVAL": "1",
            }
        )
        # As if a reconcile had run before: the scheduled runs list events
        # (a first run without a cursor would sync orders and customers instead).
        write_state(db.engine, "default", EVENTS_CURSOR, {"at": utcnow().isoformat()})
        app = create_app(settings, db.engine)  # with the scheduler
        with serving(app, port=port):
            store.run(store.sell(orders=40), timeout=60)
            store.run(store.wait_deliveries(timeout=60), timeout=70)
            assert store.lost_event_ids
            truth = store.truth()

            def recovered() -> bool:
                return not truth_problems(db.engine, truth)

            wait_for(
                recovered,
                timeout=60,
                interval=0.25,
                message="the scheduled reconcile to recover the lost webhooks",
            )
            runs = app.state.daemon.metrics.reconcile_runs.labels("default", "ok")._value.get()
            assert runs >= 1
    finally:
        store.stop_thread()
    with db.engine.connect() as conn:
        shopertis = Event.snapshot.is_(False)  # not the copies read to settle ties
        reconciled = set(
            conn.scalars(select(Event.id).where(Event.source == "reconcile", shopertis))
        )
        stored = conn.scalar(select(func.count()).select_from(Event).where(shopertis))
    # Runs during the burst may also pick up events whose webhook was still on
    # its way; every lost one must be among them, and each event stored once.
    assert set(store.lost_event_ids) <= reconciled
    assert stored == len(store.events)
