"""The analyst views against numbers computed here, independently, in Python
with Decimal from the simulated store's own truth — every row of every view,
on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from syncd.config import StoreConfig
from syncd.db import views
from syncd.reconcile import sync_resource
from syncd.shoperti.client import ShopertiClient
from syncd.simulator import SimulatedStore
from tests.conftest import TestDatabase

KEY = "sk_test_views"
STORE = StoreConfig("default")
ZONE = ZoneInfo("America/Mexico_City")
CENT = Decimal("0.0001")
JSON = dict[str, Any]


@pytest.fixture(scope="module")
def shop() -> Iterator[SimulatedStore]:
    store = SimulatedStore(seed=41, api_key=KEY, webhook_url=None, time_scale=1 / 36000)
    store.start_in_thread()
    try:
        store.generate_history(orders=400, days=40)
        yield store
    finally:
        store.stop_thread()


@pytest.fixture
def loaded(db: TestDatabase, shop: SimulatedStore) -> TestDatabase:
    async def run() -> None:
        async with ShopertiClient(shop.api_url, KEY) as client:
            for resource in ("customers", "orders"):
                await sync_resource(db.engine, STORE, client, resource, None)

    asyncio.run(run())
    return db


# --- reading values the same way from every database ------------------------------------


def money(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value)).quantize(CENT)


def moment(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    when: datetime = value
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def wall(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    when: datetime = value
    return when.replace(tzinfo=None)


def day(value: Any) -> date | None:
    if value is None:
        return None
    return date.fromisoformat(value) if isinstance(value, str) else value


def flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def whole(value: Any) -> int | None:
    return None if value is None else int(value)


def same(value: Any) -> Any:
    return value


def ratio(value: Any) -> Decimal | None:
    """An average: compared to 0.0001 (a division's last digit depends on the database)."""
    return money(value)


def hours(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


ORDER_FACTS = {
    "store": same, "order_id": same, "number": whole, "created_at": moment,
    "created_at_local": wall, "created_date_local": day, "customer_id": same,
    "is_guest": flag, "customer_order_seq": whole, "is_repeat": flag, "currency": same,
    "gross_sales": money, "discounts": money, "tax": money, "shipping": money,
    "total": money, "refunded": money, "net_sales": money, "paid": money,
    "payment_gateway": same, "payment_method": same, "financial_status": same,
    "fulfillment_status": same, "is_cancelled": flag, "first_fulfilled_at": moment,
    "hours_to_first_fulfillment": hours, "units": whole,
}  # fmt: skip
DAILY_SALES = {
    "store": same, "date": day, "orders": whole, "units": whole, "gross_sales": money,
    "discounts": money, "tax": money, "shipping": money, "total_sales": money,
    "refunds": money, "net_sales": money, "average_order_value": ratio,
    "new_customer_orders": whole, "repeat_customer_orders": whole, "guest_orders": whole,
}  # fmt: skip
CUSTOMER_FACTS = {
    "store": same, "customer_id": same, "email": same, "orders": whole,
    "first_order_at": moment, "last_order_at": moment, "cohort_month": day,
    "lifetime_total": money, "lifetime_refunded": money, "lifetime_net_sales": money,
    "average_order_value": ratio,
}  # fmt: skip


def assert_rows_equal(got: Mapping[Any, JSON], expected: Mapping[Any, JSON]) -> None:
    averages = [
        (key, name)
        for key, row in expected.items()
        for name in row
        if name == "average_order_value" and key in got
    ]
    for key, name in averages:
        mine, theirs = got[key][name], expected[key][name]
        assert (mine is None) == (theirs is None), (key, mine, theirs)
        if mine is not None:
            assert abs(mine - theirs) <= Decimal("0.0001"), (key, mine, theirs)
    strip = {"average_order_value"}
    assert {k: {n: v for n, v in r.items() if n not in strip} for k, r in got.items()} == {
        k: {n: v for n, v in r.items() if n not in strip} for k, r in expected.items()
    }


def view(db: TestDatabase, name: str, columns: Mapping[str, Any], key: str) -> dict[Any, JSON]:
    with db.engine.connect() as conn:
        found = conn.execute(text(f"SELECT * FROM {name}")).mappings().all()
    rows = {}
    for row in found:
        assert set(row) == set(columns), name
        read = {column: convert(row[column]) for column, convert in columns.items()}
        rows[read[key]] = read
    return rows


# --- the same numbers, from the store's truth ----------------------------------------------


def amount(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def utc(value: str | None) -> datetime | None:
    return moment(value) if value is not None else None


def local(at: datetime) -> datetime:
    return at.astimezone(ZONE).replace(tzinfo=None)


def expected_order_facts(orders: Mapping[str, JSON]) -> dict[str, JSON]:
    live = {oid: order for oid, order in orders.items() if not order.get("deleted")}
    counted = {oid for oid, order in live.items() if order.get("cancelled_at") is None}
    sequence: dict[str, int] = {}
    by_customer: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for oid in counted:
        customer = live[oid].get("customer")
        if customer is not None:
            by_customer[customer["id"]].append((utc(live[oid]["created_at"]), oid))  # type: ignore[arg-type]
    for placed in by_customer.values():
        for rank, (_, oid) in enumerate(sorted(placed), start=1):
            sequence[oid] = rank
    facts = {}
    for oid, order in live.items():
        lines = order.get("line_items") or []
        gross = sum((amount(li["price"]) * li["quantity"] for li in lines), Decimal(0))
        discounts = sum((amount(li["total_discount"]) for li in lines), Decimal(0))
        discounts += amount(order["total_discounts"])
        refunded = sum((amount(r["amount"]) for r in order.get("refunds") or []), Decimal(0))
        transactions = order.get("transactions") or []
        paid = Decimal(0)
        payments = []
        for position, t in enumerate(transactions, start=1):
            if t["status"] != "success":
                continue
            if t["kind"] in ("sale", "capture"):
                paid += amount(t["amount"])
                payments.append((utc(t["created_at"]), position, t))
            elif t["kind"] == "refund":
                paid -= amount(t["amount"])
        first = min(payments, key=lambda p: (p[0], p[1]))[2] if payments else None
        fulfilled = [
            utc(f["created_at"])
            for f in order.get("fulfillments") or []
            if f["status"] == "success"
        ]
        created = utc(order["created_at"])
        assert created is not None
        first_fulfilled = min(fulfilled) if fulfilled else None  # type: ignore[type-var]
        seq = sequence.get(oid)
        customer = order.get("customer")
        facts[oid] = {
            "store": "default",
            "order_id": oid,
            "number": order["number"],
            "created_at": created,
            "created_at_local": local(created),
            "created_date_local": local(created).date(),
            "customer_id": customer["id"] if customer else None,
            "is_guest": customer is None,
            "customer_order_seq": seq,
            "is_repeat": seq is not None and seq > 1,
            "currency": order["currency"],
            "gross_sales": money(gross),
            "discounts": money(discounts),
            "tax": money(amount(order["total_tax"])),
            "shipping": money(amount(order["total_shipping"])),
            "total": money(amount(order["total"])),
            "refunded": money(refunded),
            "net_sales": money(gross - discounts - refunded),
            "paid": money(paid),
            "payment_gateway": first["gateway"] if first else None,
            "payment_method": first["payment_method"] if first else None,
            "financial_status": order["financial_status"],
            "fulfillment_status": order["fulfillment_status"],
            "is_cancelled": order.get("cancelled_at") is not None,
            "first_fulfilled_at": first_fulfilled,
            "hours_to_first_fulfillment": (
                round((first_fulfilled - created).total_seconds() / 3600, 4)
                if first_fulfilled
                else None
            ),
            "units": sum(li["quantity"] for li in lines),
        }
    return facts


def expected_daily_sales(facts: Mapping[str, JSON], orders: Mapping[str, JSON]) -> dict[date, JSON]:
    days: dict[date, JSON] = {}

    def row(on: date) -> JSON:
        return days.setdefault(
            on,
            {
                "store": "default", "date": on, "orders": 0, "units": 0,
                "gross_sales": Decimal(0), "discounts": Decimal(0), "tax": Decimal(0),
                "shipping": Decimal(0), "total_sales": Decimal(0), "refunds": Decimal(0),
                "new_customer_orders": 0, "repeat_customer_orders": 0, "guest_orders": 0,
            },
        )  # fmt: skip

    for fact in facts.values():
        if fact["is_cancelled"]:
            continue
        entry = row(fact["created_date_local"])
        entry["orders"] += 1
        entry["units"] += fact["units"]
        for name, source in (
            ("gross_sales", "gross_sales"),
            ("discounts", "discounts"),
            ("tax", "tax"),
            ("shipping", "shipping"),
            ("total_sales", "total"),
        ):
            entry[name] += fact[source]
        seq = fact["customer_order_seq"]
        entry["new_customer_orders"] += seq == 1
        entry["repeat_customer_orders"] += seq is not None and seq > 1
        entry["guest_orders"] += fact["is_guest"]
    for oid in facts:  # refunds of non-deleted orders, on the day they were made
        for refund in orders[oid].get("refunds") or []:
            made = utc(refund["created_at"])
            assert made is not None
            row(local(made).date())["refunds"] += amount(refund["amount"])
    for entry in days.values():
        entry["net_sales"] = entry["gross_sales"] - entry["discounts"] - entry["refunds"]
        entry["average_order_value"] = (
            entry["total_sales"] / entry["orders"] if entry["orders"] else None
        )
        for name in ("gross_sales", "discounts", "tax", "shipping", "total_sales", "refunds",
                     "net_sales", "average_order_value"):  # fmt: skip
            entry[name] = money(entry[name])
    return days


def expected_customer_facts(
    facts: Mapping[str, JSON], customers: Mapping[str, JSON]
) -> dict[str, JSON]:
    result = {}
    for cid, customer in customers.items():
        if customer.get("deleted"):
            continue
        mine = [f for f in facts.values() if f["customer_id"] == cid and not f["is_cancelled"]]
        first = min(mine, key=lambda f: (f["created_at"], f["order_id"])) if mine else None
        total = sum((f["total"] for f in mine), Decimal(0))
        result[cid] = {
            "store": "default",
            "customer_id": cid,
            "email": customer.get("email"),
            "orders": len(mine),
            "first_order_at": min(f["created_at"] for f in mine) if mine else None,
            "last_order_at": max(f["created_at"] for f in mine) if mine else None,
            "cohort_month": first["created_date_local"].replace(day=1) if first else None,
            "lifetime_total": money(total),
            "lifetime_refunded": money(sum((f["refunded"] for f in mine), Decimal(0))),
            "lifetime_net_sales": money(sum((f["net_sales"] for f in mine), Decimal(0))),
            "average_order_value": money(total / len(mine)) if mine else None,
        }
    return result


# --- the tests -------------------------------------------------------------------------------


def test_the_dictionary_lists_exactly_the_columns_of_each_view(db: TestDatabase) -> None:
    converters = {"order_facts": ORDER_FACTS, "daily_sales": DAILY_SALES}
    converters["customer_facts"] = CUSTOMER_FACTS
    for documented in views.VIEWS:
        with db.engine.connect() as conn:
            columns = list(conn.execute(text(f"SELECT * FROM {documented.name}")).keys())
        assert [c.name for c in documented.columns] == columns
        assert list(converters[documented.name]) == columns


def test_the_seeded_store_has_every_case_the_views_must_handle(shop: SimulatedStore) -> None:
    """Without these, the equality tests below would prove less than they claim."""
    truth = shop.truth()
    facts = expected_order_facts(truth.orders)
    orders = truth.orders
    assert any(order.get("deleted") for order in orders.values()), "a deleted order"
    assert any(f["is_cancelled"] for f in facts.values()), "a cancelled order"
    assert any(f["is_guest"] for f in facts.values()), "a guest order"
    assert any((f["customer_order_seq"] or 0) > 1 for f in facts.values()), "a repeat customer"
    cancelled_first = [
        f for f in facts.values()
        if f["is_cancelled"] and f["customer_id"] and any(
            g["customer_id"] == f["customer_id"] and g["created_at"] > f["created_at"]
            and g["customer_order_seq"] == 1 for g in facts.values()
        )
    ]  # fmt: skip
    assert cancelled_first, "a customer whose first order was cancelled"
    across_midnight = [
        oid for oid, f in facts.items()
        for r in orders[oid].get("refunds") or []
        if local(utc(r["created_at"])).date() != f["created_date_local"]  # type: ignore[arg-type]
    ]  # fmt: skip
    assert across_midnight, "a refund made on another local day than its order"
    evening = [f for f in facts.values() if f["created_at_local"].hour >= 18]
    assert evening and all(f["created_date_local"] != f["created_at"].date() for f in evening)


def test_order_facts_equal_the_store(loaded: TestDatabase, shop: SimulatedStore) -> None:
    expected = expected_order_facts(shop.truth().orders)
    assert view(loaded, "order_facts", ORDER_FACTS, "order_id") == expected


def test_daily_sales_equal_the_store(loaded: TestDatabase, shop: SimulatedStore) -> None:
    truth = shop.truth()
    expected = expected_daily_sales(expected_order_facts(truth.orders), truth.orders)
    assert_rows_equal(view(loaded, "daily_sales", DAILY_SALES, "date"), expected)


def test_customer_facts_equal_the_store(loaded: TestDatabase, shop: SimulatedStore) -> None:
    truth = shop.truth()
    expected = expected_customer_facts(expected_order_facts(truth.orders), truth.customers)
    assert_rows_equal(view(loaded, "customer_facts", CUSTOMER_FACTS, "customer_id"), expected)
