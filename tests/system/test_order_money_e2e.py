"""End to end, on SQLite, PostgreSQL and MariaDB: the simulated store sells
payments, refunds, fulfillments and discount codes; webhooks are lost,
duplicated and reordered; reconcile fills the gaps. Every order-list table
then equals the store's truth (counts, amounts to the cent, quantities), and
every order's local day is right, evenings in Mexico City included.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, literal, select

from syncd.db.models import Order, OrderRefund, metadata
from syncd.simulator import Faults
from tests.conftest import TestDatabase
from tests.support import RIG_TOKEN, all_applied, rig, truth_problems, wait_for

# Mexico City has kept -06:00 all year since 2022: the simulator's own offset,
# independent of the zone rules syncd computes with.
MEXICO_CITY = timezone(timedelta(hours=-6))


def local_day(stamp: str) -> tuple[date, int]:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive means UTC
    local = moment.astimezone(MEXICO_CITY)
    return local.date(), local.hour


def amount(value: Any) -> Decimal:
    return Decimal(str(value))


def truth_totals(orders: dict[str, dict[str, Any]]) -> dict[str, tuple[int, Decimal, int]]:
    """(rows, Σ amount, Σ quantity) each new table should hold, from the truth's JSON."""
    totals: dict[str, list[Any]] = {
        name: [0, Decimal(0), 0]
        for name in (
            "order_transactions",
            "order_refunds",
            "order_refund_line_items",
            "order_fulfillments",
            "order_fulfillment_line_items",
            "order_discount_codes",
        )
    }

    def add(table: str, money: Any = 0, quantity: int = 0) -> None:
        totals[table][0] += 1
        totals[table][1] += amount(money)
        totals[table][2] += quantity

    for order in orders.values():
        for txn in order["transactions"]:
            add("order_transactions", txn["amount"])
        for refund in order["refunds"]:
            add("order_refunds", refund["amount"])
            for line in refund["line_items"]:
                add("order_refund_line_items", line["amount"], line["quantity"])
        for shipment in order["fulfillments"]:
            add("order_fulfillments")
            for line in shipment["line_items"]:
                add("order_fulfillment_line_items", 0, line["quantity"])
        for code in order["discount_codes"]:
            add("order_discount_codes", code["amount"])
    return {name: (rows, money, units) for name, (rows, money, units) in totals.items()}


def stored_totals(db: TestDatabase) -> dict[str, tuple[int, Decimal, int]]:
    found = {}
    with db.engine.connect() as conn:
        for name in truth_totals({}):
            table = metadata.tables[name]
            money = (
                func.coalesce(func.sum(table.c.amount), 0) if "amount" in table.c else literal(0)
            )
            units = (
                func.coalesce(func.sum(table.c.quantity), 0)
                if "quantity" in table.c
                else literal(0)
            )
            rows, total, quantity = conn.execute(
                select(func.count(), money, units).select_from(table)
            ).one()
            found[name] = (int(rows), amount(total), int(quantity))
    return found


def test_the_order_lists_end_equal_to_the_store(db: TestDatabase) -> None:
    faults = Faults(drop_rate=0.2, duplicate_rate=0.1, reorder_window=20)
    with rig(db, faults=faults, seed=21) as r:
        # Past orders (no webhooks) reach syncd by the first run's resource sync;
        # the orders sold after, by webhooks with faults and then reconcile.
        r.store.generate_history(orders=150, days=20)
        assert r.reconcile(db).mode == "resources"
        r.store.run(r.store.sell(orders=150), timeout=120)
        r.store.run(r.store.wait_deliveries(timeout=120), timeout=130)
        assert r.store.lost_event_ids and r.store.delivery_stats.duplicated
        wait_for(lambda: all_applied(db), message="webhook events applied")
        report = r.reconcile(db, apply_now=True)
        assert report.error is None and report.found
        wait_for(lambda: all_applied(db), message="reconciled events applied")
        truth = r.store.truth()

        assert truth_problems(db.engine, truth) == []
        expected = truth_totals(truth.orders)
        assert stored_totals(db) == expected
        for name, (rows, _, _) in expected.items():
            assert rows > 0, f"the simulator sold no {name}"

        # Every order's local day, computed apart from syncd; evenings in
        # Mexico City (18:00 to 24:00, the next day in UTC) are the case that matters.
        with db.engine.connect() as conn:
            days = dict(conn.execute(select(Order.id, Order.created_date_local)).all())
            refund_days = dict(
                conn.execute(select(OrderRefund.id, OrderRefund.created_date_local)).all()
            )
        hours: Counter[bool] = Counter()
        for order_id, order in truth.orders.items():
            day, hour = local_day(order["created_at"])
            assert days[order_id] == day, order_id
            hours[hour >= 18] += 1
            for refund in order["refunds"]:
                assert refund_days[refund["id"]] == local_day(refund["created_at"])[0]
        assert hours[True] > 0 and hours[False] > 0

        # An older version of an order with refunds, arriving late under a new
        # event id, changes nothing; the store's latest version is kept.
        refunded = next(
            o
            for o in truth.orders.values()
            if any(refund["line_items"] for refund in o["refunds"]) and not o.get("deleted")
        )
        older = next(
            e
            for e in r.store.events
            if e["type"] == "order.created" and e["data"]["id"] == refunded["id"]
        )
        late = {**older, "id": "evt_late_older_version"}
        answer = httpx.post(f"{r.url}/webhooks/shoperti?token={RIG_TOKEN}", json=late, timeout=10)
        assert answer.status_code == 200, answer.text
        wait_for(lambda: all_applied(db), message="the late event applied")
        assert truth_problems(db.engine, truth) == []

        # The comparison notices a missing refund line.
        with db.engine.begin() as conn:
            lines = metadata.tables["order_refund_line_items"]
            conn.execute(lines.delete().where(lines.c.order_id == refunded["id"]))
        problems = truth_problems(db.engine, truth)
        assert f"order {refunded['id']}: order_refund_line_items differ" in problems
