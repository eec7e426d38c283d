"""Reconcile, resource sync, verification and backfill against the simulated
store over real HTTP, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from syncd.config import load_settings
from syncd.db import dialect
from syncd.db.models import Customer, Event, Order
from syncd.inbox import utcnow
from syncd.reconcile import sync_resource
from syncd.shoperti import wire
from syncd.shoperti.client import ShopertiClient
from syncd.simulator import Faults
from syncd.state import EVENTS_CURSOR, read_state
from syncd.worker import apply_pending
from tests.conftest import TestDatabase
from tests.support import RIG_KEY, RIG_TOKEN, all_applied, rig, rig_env, truth_problems, wait_for


def count(db: TestDatabase, *where: Any) -> int:
    with db.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Event).where(*where)) or 0)


def ids(db: TestDatabase, *where: Any) -> set[str]:
    with db.engine.connect() as conn:
        return set(conn.scalars(select(Event.id).where(*where)))


def test_reconcile_recovers_exactly_the_lost_webhooks(db: TestDatabase) -> None:
    faults = Faults(drop_rate=0.3, duplicate_rate=0.1, reorder_window=10)
    with rig(db, faults=faults) as r:
        first = r.reconcile(db)  # empty store, no cursor: a resource sync sets the cursor
        assert (first.mode, first.found, first.error) == ("resources", 0, None)
        r.store.run(r.store.sell(orders=50), timeout=60)
        r.store.run(r.store.wait_deliveries(timeout=60), timeout=70)
        lost = set(r.store.lost_event_ids)
        assert lost, "the fault knob should have lost some webhooks"
        wait_for(lambda: all_applied(db), message="webhook events applied")
        report = r.reconcile(db, apply_now=True)
        assert report.error is None and report.mode == "events"
        assert report.found == len(lost)
        # Besides them, reconcile may have fetched current copies to settle
        # same-second ties (snapshots, docs/apply-rules.md): not webhooks.
        assert ids(db, Event.source == "reconcile", Event.snapshot.is_(False)) == lost
        wait_for(lambda: all_applied(db), message="reconciled events applied")
        truth = r.store.truth()
        assert truth_problems(db.engine, truth) == []
        # Every event is stored once, whatever the duplicates.
        assert count(db, Event.snapshot.is_(False)) == len(r.store.events)
        # A second pass finds nothing new and moves the cursor forward.
        cursor_before = read_state(db.engine, "default", EVENTS_CURSOR)
        again = r.reconcile(db)
        assert again.found == 0 and again.events_seen >= len(r.store.events) - 1
        cursor_after = read_state(db.engine, "default", EVENTS_CURSOR)
        assert cursor_before and cursor_after and cursor_after["at"] > cursor_before["at"]
        # The comparison itself notices a difference.
        some_order, some_customer = next(iter(truth.orders)), next(iter(truth.customers))
        with db.engine.begin() as conn:
            conn.execute(update(Order).where(Order.id == some_order).values(total=0))
            conn.execute(delete(Customer).where(Customer.id == some_customer))
        problems = truth_problems(db.engine, truth)
        assert f"order {some_order}: total differs" in problems
        assert f"customer {some_customer} missing" in problems


def test_a_gap_longer_than_retention_is_recovered_by_resource_sync(db: TestDatabase) -> None:
    retention = 2
    with rig(
        db,
        faults=Faults(drop_rate=1.0),
        retention=retention,
        SYNCD_EVENT_RETENTION=str(retention),
        SYNCD_RECONCILE_LOOKBACK="0",
    ) as r:
        r.reconcile(db)
        cursor = read_state(db.engine, "default", EVENTS_CURSOR)
        assert cursor is not None
        r.store.run(r.store.sell(orders=30), timeout=60)
        r.store.run(r.store.wait_deliveries(timeout=60), timeout=70)
        assert count(db, Event.source == "webhook") == 0
        since = datetime.fromisoformat(cursor["at"])
        wait_for(
            lambda: (utcnow() - since).total_seconds() > retention + 0.5,
            message="the cursor to fall out of the retention window",
        )
        report = r.reconcile(db, apply_now=True)
        assert report.error is None
        assert report.mode == "resources"
        assert report.resources_seen["orders"] >= 30
        wait_for(lambda: all_applied(db), message="snapshot events applied")
        truth = r.store.truth()
        assert truth_problems(db.engine, truth) == []
        assert count(db, Event.source == "backfill") > 0


def test_forged_events_never_reach_the_tables_in_api_mode(db: TestDatabase) -> None:
    with rig(db, webhooks=False) as r:
        r.store.run(r.store.sell(orders=3), timeout=30)
        real = next(e for e in r.store.events if e["type"] == "order.created")
        order_id = real["data"]["id"]
        forged_copy = {**real, "data": {**real["data"], "total": "0.01", "subtotal": "0.01"}}
        unknown = {
            **real,
            "id": "evt_forged_unknown",
            "data": {**real["data"], "id": "order_forged", "total": "99999.00"},
        }
        other_type = {**real, "type": "order.refunded"}
        hook = f"{r.url}/webhooks/shoperti?token={RIG_TOKEN}"
        with httpx.Client() as http:
            for body in (unknown, forged_copy):
                assert http.post(hook, json=body).status_code == 200
        wait_for(lambda: all_applied(db), message="forged events processed")
        with db.engine.connect() as conn:
            orders = {row.id: row for row in conn.execute(select(Order.__table__))}
        assert "order_forged" not in orders
        assert "evt_forged_unknown" in ids(db, Event.status == "rejected")
        # The real id is applied — as the API tells it, not as posted.
        assert orders[order_id].last_event_id == real["id"]
        assert orders[order_id].total != forged_copy["data"]["total"]
        with db.engine.connect() as conn:
            stored = conn.execute(
                select(Event.payload, Event.verified).where(Event.id == real["id"])
            ).one()
        assert stored.verified is True and stored.payload["data"]["total"] == real["data"]["total"]
        assert orders[order_id].total == wire.money(real["data"]["total"], "total")
        # Same id, other type than the API's copy: rejected.
        db.reset()
        with httpx.Client() as http:
            assert http.post(hook, json=other_type).status_code == 200
        wait_for(lambda: all_applied(db), message="mismatched event processed")
        assert ids(db, Event.status == "rejected") == {real["id"]}
        with db.engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(Order)) == 0


class Interrupt(Exception):
    pass


def test_backfill_interrupted_half_way_resumes_without_duplicates(db: TestDatabase) -> None:
    with rig(db, webhooks=False) as r:
        r.store.generate_history(orders=450, days=60)
        config = r.settings.store()

        async def backfill(stop_after_pages: int | None) -> None:
            pages = 0

            def progress(resource: str, done: int, total: int | None) -> None:
                nonlocal pages
                pages += 1
                if (
                    stop_after_pages is not None
                    and resource == "orders"
                    and pages >= stop_after_pages
                ):
                    raise Interrupt

            async with ShopertiClient(r.store.api_url, RIG_KEY) as client:
                for resource in ("customers", "orders"):
                    await sync_resource(
                        db.engine,
                        config,
                        client,
                        resource,
                        None,
                        progress=progress,
                        apply_batch=100,  # a transaction and a checkpoint per page
                    )

        with pytest.raises(Interrupt):
            asyncio.run(backfill(stop_after_pages=4))
        checkpoint = read_state(db.engine, "default", "backfill:orders")
        assert checkpoint is not None and checkpoint["cursor"]["page"] >= 2
        half = count(db, Event.source == "backfill")
        requests_before = sum(r.store.api_answers.values())
        asyncio.run(backfill(stop_after_pages=None))
        assert read_state(db.engine, "default", "backfill:orders") is None
        truth = r.store.truth()
        assert truth_problems(db.engine, truth) == []
        total = count(db, Event.source == "backfill")
        assert total == len(truth.orders) + len(truth.customers)
        assert half < total
        # The second run started from the checkpoint, not from page 1.
        order_pages = -(-len(truth.orders) // 100)
        customer_pages = -(-len(truth.customers) // 100)
        resumed_requests = sum(r.store.api_answers.values()) - requests_before
        assert resumed_requests < order_pages + customer_pages


def test_backfill_command_killed_and_run_again(sqlite_db: TestDatabase, tmp_path: Path) -> None:
    db = sqlite_db
    faults = Faults(api_slow_rate=1.0, api_slow_seconds=0.15)
    with rig(db, webhooks=False, faults=faults) as r:
        # More orders than one apply batch (1,000), so that a checkpoint
        # commits while the listing is still under way.
        r.store.generate_history(orders=2500, days=30)
        env = {**os.environ, **rig_env(db, r.store.api_url)}
        command = [sys.executable, "-m", "syncd", "backfill"]
        first = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(
                lambda: read_state(db.engine, "default", "backfill:orders"),
                timeout=60,
                message="a checkpoint of the orders listing",
            )
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(30)
        assert first.returncode == -signal.SIGKILL
        r.store.set_api_faults(Faults())
        second = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
        )
        assert second.returncode == 0, second.stderr
        assert "backfill done" in second.stdout
        truth = r.store.truth()
        assert truth_problems(db.engine, truth) == []


def test_only_one_process_reconciles_at_a_time(db: TestDatabase, tmp_path: Path) -> None:
    with rig(db, webhooks=False) as r:
        env = {**os.environ, **rig_env(db, r.store.api_url)}
        command = [sys.executable, "-m", "syncd", "reconcile"]
        with db.engine.connect() as conn, dialect.session_lock(conn, "reconcile:default") as got:
            assert got
            held = subprocess.run(
                command,
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert held.returncode == 0, held.stderr
        assert "skipped, another process is reconciling" in held.stdout
        assert read_state(db.engine, "default", EVENTS_CURSOR) is None
        free = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert free.returncode == 0, free.stderr
        assert "resource sync since the beginning" in free.stdout
        assert read_state(db.engine, "default", EVENTS_CURSOR) is not None


def test_transient_api_failures_leave_events_pending_then_verified(db: TestDatabase) -> None:
    with rig(db, webhooks=False, SYNCD_MAX_ATTEMPTS="50") as r:
        r.store.run(r.store.sell(orders=2), timeout=30)
        event = r.store.events[0]
        r.store.set_api_faults(Faults(api_5xx_rate=1.0))
        with httpx.Client() as http:
            answer = http.post(f"{r.url}/webhooks/shoperti?token={RIG_TOKEN}", json=event)
        assert answer.status_code == 200
        wait_for(lambda: count(db, Event.attempts > 0), message="a failed verification")
        with db.engine.connect() as conn:
            row = conn.execute(select(Event.status, Event.verified, Event.last_error)).one()
        assert row.status == "pending" and row.verified is False
        assert "verification failed" in (row.last_error or "")
        r.store.set_api_faults(Faults())
        # Backoff put the next attempt in the future; make it due now.
        with db.engine.begin() as conn:
            conn.execute(update(Event).values(next_attempt_at=None))
        wait_for(
            lambda: count(db, Event.status == "applied") == 1,
            timeout=30,
            message="the event verified and applied once the API answers",
        )


def test_apply_pending_is_a_no_op_without_events(db: TestDatabase) -> None:
    settings = load_settings({"SYNCD_DATABASE_URL": db.url})
    report = apply_pending(db.engine, settings.store(), limit=10, max_attempts=3)
    assert report.claimed == 0
