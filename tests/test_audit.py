"""``syncd audit`` against the simulated store over real HTTP, on SQLite,
PostgreSQL and MariaDB: an intact database agrees; each kind of damage is
found under its kind; --repair makes the tables equal the store again."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from syncd.audit import AuditReport, audit_store
from syncd.config import StoreConfig
from syncd.db.models import Customer, Event, Order, OrderRefund, OrderRefundLineItem, metadata
from syncd.inbox import utcnow
from syncd.reconcile import sync_resource
from syncd.shoperti.client import ShopertiClient
from syncd.simulator import SimulatedStore
from tests.conftest import TestDatabase
from tests.support import truth_problems

KEY = "sk_test_audit"
STORE = StoreConfig("default")


@pytest.fixture
def shop() -> Iterator[SimulatedStore]:
    store = SimulatedStore(seed=23, api_key=KEY, webhook_url=None, time_scale=1 / 36000)
    store.start_in_thread()
    try:
        store.run(store.sell(orders=40), timeout=60)
        yield store
    finally:
        store.stop_thread()


def backfill(db: TestDatabase, shop: SimulatedStore) -> None:
    async def run() -> None:
        async with ShopertiClient(shop.api_url, KEY) as client:
            for resource in ("customers", "orders"):
                await sync_resource(db.engine, STORE, client, resource, None)

    asyncio.run(run())


def audit(db: TestDatabase, shop: SimulatedStore, *, repair: bool = False) -> AuditReport:
    async def run() -> AuditReport:
        async with ShopertiClient(shop.api_url, KEY) as client:
            return await audit_store(db.engine, STORE, client, repair=repair)

    return asyncio.run(run())


def ids(report: AuditReport, resource: str, kind: str) -> list[str]:
    return report.findings[resource].first[kind]


def damage(db: TestDatabase) -> dict[str, str]:
    """One order of each kind of damage, and a changed customer; returns their ids."""
    with db.engine.begin() as conn:
        order_ids = sorted(conn.scalars(select(Order.id).where(Order.deleted.is_(False))))
        customer_id = conn.scalar(select(Customer.id).where(Customer.email.is_not(None)))
        gone, stale, changed = order_ids[:3]
        for table in metadata.sorted_tables:  # the order's lines, addresses, payments…
            if "order_id" in table.c and table.name != "order_status_history":
                conn.execute(delete(table).where(table.c.order_id == gone))
        conn.execute(delete(Order).where(Order.id == gone))
        was = conn.scalar(select(Order.updated_at).where(Order.id == stale))
        assert was is not None
        conn.execute(
            update(Order).where(Order.id == stale).values(updated_at=was - timedelta(hours=1))
        )
        conn.execute(update(Order).where(Order.id == changed).values(total=Order.total + 1))
        # A refund lost from an order whose own row is intact: "different" too.
        refunded = conn.execute(
            select(OrderRefund.order_id, OrderRefund.id).where(
                OrderRefund.order_id.not_in([gone, stale, changed])
            )
        ).first()
        assert refunded is not None, "the seeded store has a refund"
        conn.execute(
            delete(OrderRefundLineItem).where(OrderRefundLineItem.refund_id == refunded.id)
        )
        conn.execute(delete(OrderRefund).where(OrderRefund.id == refunded.id))
        conn.execute(
            update(Customer).where(Customer.id == customer_id).values(email="other@example.com")
        )
        long_ago = utcnow() - timedelta(days=1)
        conn.execute(
            insert(Order).values(
                store="default",
                id="ord_ghost",
                updated_at=long_ago,
                created_at=long_ago,
                deleted=False,
                raw={"id": "ord_ghost"},
                synced_at=long_ago,
            )
        )
    assert customer_id is not None
    return {
        "missing": gone,
        "stale": stale,
        "different": changed,
        "refund lost": refunded.order_id,
        "unknown": "ord_ghost",
        "customer": customer_id,
    }


def test_an_intact_database_agrees_and_audit_writes_nothing(
    db: TestDatabase, shop: SimulatedStore
) -> None:
    backfill(db, shop)
    with db.engine.connect() as conn:
        events_before = conn.execute(select(Event.id, Event.status)).all()
    report = audit(db, shop)
    assert report.clean, json.dumps(report.to_json())
    truth = shop.truth()
    assert report.findings["orders"].listed == len(truth.orders)
    assert report.findings["customers"].listed == len(truth.customers)
    with db.engine.connect() as conn:
        assert conn.execute(select(Event.id, Event.status)).all() == events_before


def test_each_damage_is_found_under_its_kind_and_repair_restores_the_truth(
    db: TestDatabase, shop: SimulatedStore
) -> None:
    backfill(db, shop)
    damaged = damage(db)
    report = audit(db, shop)
    assert not report.clean
    for kind in ("missing", "stale", "unknown"):
        assert ids(report, "orders", kind) == [damaged[kind]], (kind, report.to_json())
    assert sorted(ids(report, "orders", "different")) == sorted(
        [damaged["different"], damaged["refund lost"]]
    )
    assert ids(report, "customers", "different") == [damaged["customer"]]
    assert report.findings["customers"].differing == 1

    repaired = audit(db, shop, repair=True)
    assert repaired.clean, repaired.to_json()
    assert repaired.before_repair is not None and not repaired.before_repair.clean
    assert repaired.repaired == 6  # 4 orders and a customer from the list, the ghost by id
    truth = shop.truth()
    # The ghost order is kept, marked deleted (rows are never removed).
    problems = truth_problems(db.engine, truth)
    assert problems == ["1 orders in the database that the store does not have"]
    with db.engine.connect() as conn:
        assert conn.scalar(select(Order.deleted).where(Order.id == "ord_ghost")) is True
        sources = set(conn.scalars(select(Event.source).where(Event.id.like("snap_%"))))
    assert "audit" in sources


def test_the_command_exits_1_on_differences_and_0_once_repaired(
    db: TestDatabase, shop: SimulatedStore
) -> None:
    backfill(db, shop)
    damaged = damage(db)
    env = {
        **os.environ,
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_API_URL": shop.api_url,
        "SYNCD_API_KEY": KEY,
    }

    def syncd(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "syncd", "audit", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    found = syncd("--json")
    assert found.returncode == 1, found.stderr
    document: dict[str, Any] = json.loads(found.stdout)
    orders = document["stores"][0]["findings"]["orders"]
    assert orders["first"]["missing"] == [damaged["missing"]]
    assert document["clean"] is False
    plain = syncd("--repair")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "before repair" in plain.stdout and "the tables equal the store" in plain.stdout
    assert KEY not in plain.stdout + plain.stderr
    assert syncd().returncode == 0
