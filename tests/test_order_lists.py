"""An order's transactions, refunds, fulfillments and discount codes, and the
store-local time columns, through the worker, on SQLite, PostgreSQL and MariaDB.

- Each list is replaced as a whole by every newer version of its order; an
  older version arriving late changes nothing; replay rebuilds them.
- A list naming an id twice fails its event with the reason; nothing is written.
- Local times: daylight saving (America/Tijuana), the hour around a change,
  a date boundary, two stores with their own zones in one database, and a
  changed zone recomputing a store's rows (and only that store's).
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from syncd import localtime
from syncd.config import StoreConfig
from syncd.replay import replay_store
from syncd.vocabulary import EventSource
from syncd.worker import add_and_apply
from tests.factories import line_item, order_event, placed
from tests.support import (
    DELIVERIES,
    STORE,
    apply_all,
    apply_as,
    deliver,
    event_status,
    rows,
    snapshot,
)

D = Decimal


def txn(txn_id: str, amount: str = "116.00", **changes: Any) -> dict[str, Any]:
    return {
        "id": txn_id,
        "kind": "sale",
        "status": "success",
        "gateway": "conekta",
        "payment_method": "card",
        "amount": amount,
        "currency": "MXN",
        "authorization": f"AUTH-{txn_id}",
        "error_code": None,
        "created_at": "2026-11-27T18:00:00-06:00",
        "processed_at": "2026-11-27T18:00:05-06:00",
        **changes,
    }


def refund(
    refund_id: str, amount: str, created_at: str, *lines: tuple[str, int, str]
) -> dict[str, Any]:
    return {
        "id": refund_id,
        "created_at": created_at,
        "note": None,
        "amount": amount,
        "restock": bool(lines),
        "line_items": [
            {"line_item_id": item, "quantity": quantity, "amount": paid}
            for item, quantity, paid in lines
        ],
    }


def shipment(ful_id: str, *lines: tuple[str, int], status: str = "success") -> dict[str, Any]:
    return {
        "id": ful_id,
        "status": status,
        "tracking_company": "Estafeta",
        "tracking_number": f"TRK-{ful_id}",
        "tracking_url": f"https://rastreo.example.com/{ful_id}",
        "created_at": "2026-11-28T10:00:00-06:00",
        "updated_at": "2026-11-28T10:00:00-06:00",
        "line_items": [{"line_item_id": item, "quantity": quantity} for item, quantity in lines],
    }


TWO_ITEMS = [line_item("li_1", quantity=2), line_item("li_2")]


def lists(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """The new tables, as (key…, a few values) tuples."""
    return {
        "transactions": [
            (t["id"], t["position"], t["kind"], t["status"], t["amount"])
            for t in rows(engine, "order_transactions")
        ],
        "refunds": [(r["id"], r["amount"]) for r in rows(engine, "order_refunds")],
        "refund_lines": [
            (r["refund_id"], r["line_item_id"], r["quantity"], r["amount"])
            for r in rows(engine, "order_refund_line_items")
        ],
        "fulfillments": [(f["id"], f["status"]) for f in rows(engine, "order_fulfillments")],
        "fulfillment_lines": [
            (f["fulfillment_id"], f["line_item_id"], f["quantity"])
            for f in rows(engine, "order_fulfillment_line_items")
        ],
        "codes": [
            (c["code"], c["type"], c["amount"]) for c in rows(engine, "order_discount_codes")
        ],
    }


def paid_version(event_id: str = "evt_paid", updated_at: float = 1) -> dict[str, Any]:
    return order_event(
        event_id,
        updated_at=updated_at,
        type="order.paid",
        financial_status="paid",
        line_items=TWO_ITEMS,
        subtotal="300.00",
        total_discounts="30.00",
        total="318.00",
        total_tax="48.00",
        transactions=[
            txn("t1", "318.00", status="failure", error_code="card_declined", processed_at=None),
            txn("t2", "318.00"),
        ],
        discount_codes=[{"code": "BUENFIN", "type": "percentage", "amount": "30.00"}],
    )


def refunded_version(event_id: str = "evt_refund", updated_at: float = 5) -> dict[str, Any]:
    event = paid_version(event_id, updated_at)
    event["type"] = "order.refunded"
    data = event["data"]
    data["financial_status"] = "partially_refunded"
    data["transactions"] = [
        *data["transactions"],
        txn("t3", "90.00", kind="refund", created_at="2026-11-28T19:30:00-06:00"),
    ]
    data["refunds"] = [refund("r1", "90.00", "2026-11-28T19:30:00-06:00", ("li_1", 1, "90.00"))]
    data["fulfillments"] = [shipment("f1", ("li_1", 1)), shipment("f2", ("li_2", 1))]
    return event


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_later_version_replaces_every_list(db: Any, delivery: str) -> None:
    apply_as(db.engine, [paid_version(), refunded_version()], delivery)
    assert lists(db.engine) == {
        "transactions": [
            ("t1", 1, "sale", "failure", D("318.00")),
            ("t2", 2, "sale", "success", D("318.00")),
            ("t3", 3, "refund", "success", D("90.00")),
        ],
        "refunds": [("r1", D("90.00"))],
        "refund_lines": [("r1", "li_1", 1, D("90.00"))],
        "fulfillments": [("f1", "success"), ("f2", "success")],
        "fulfillment_lines": [("f1", "li_1", 1), ("f2", "li_2", 1)],
        "codes": [("BUENFIN", "percentage", D("30.00"))],
    }
    [declined] = [t for t in rows(db.engine, "order_transactions") if t["id"] == "t1"]
    assert (declined["error_code"], declined["processed_at"]) == ("card_declined", None)
    # A refund at 19:30 on the 28th in Mexico City is on the 29th in UTC.
    [stored] = rows(db.engine, "order_refunds")
    assert stored["created_at"] == datetime.fromisoformat("2026-11-29T01:30:00+00:00")
    assert stored["created_at_local"] == datetime(2026, 11, 28, 19, 30)
    assert stored["created_date_local"] == date(2026, 11, 28)


def test_an_older_version_arriving_late_changes_nothing(db: Any) -> None:
    deliver(db.engine, refunded_version())
    apply_all(db.engine)
    before = snapshot(db.engine)
    deliver(db.engine, paid_version())  # older: no refund, no fulfillment
    report = apply_all(db.engine)
    assert report.applied == 1
    after = snapshot(db.engine)
    history = after.pop("order_status_history")
    assert len(history) == len(before.pop("order_status_history")) + 1
    assert after == before
    assert lists(db.engine)["refunds"] == [("r1", D("90.00"))]


def test_a_version_without_lists_leaves_none(db: Any) -> None:
    deliver(db.engine, refunded_version())
    apply_all(db.engine)
    later = order_event("evt_later", updated_at=9, line_items=TWO_ITEMS)  # lists absent
    later["data"]["transactions"] = None
    deliver(db.engine, later)
    apply_all(db.engine)
    assert all(found == [] for found in lists(db.engine).values())


def test_the_same_id_twice_fails_the_event_and_keeps_the_last_version(db: Any) -> None:
    deliver(db.engine, paid_version())
    apply_all(db.engine)
    twice = refunded_version()
    twice["data"]["refunds"] = [
        refund("r1", "10.00", "2026-11-28T10:00:00-06:00"),
        refund("r1", "20.00", "2026-11-28T11:00:00-06:00"),
    ]
    deliver(db.engine, twice)
    report = apply_all(db.engine)
    assert report.failed == 1
    assert event_status(db.engine, "evt_refund") == (
        "failed",
        "data.refunds: the same id appears twice",
    )
    assert lists(db.engine)["refunds"] == []
    assert [t[0] for t in lists(db.engine)["transactions"]] == ["t1", "t2"]


def test_a_malformed_refund_amount_fails_its_event_alone(db: Any) -> None:
    bad = refunded_version("evt_bad")
    bad["data"]["id"] = "ord_2"
    bad["data"]["refunds"][0]["amount"] = "90,00"
    deliver(db.engine, paid_version(), bad)
    report = apply_all(db.engine)
    assert (report.applied, report.failed) == (1, 1)
    assert event_status(db.engine, "evt_bad") == (
        "failed",
        "data.refunds[0].amount: not a decimal amount",
    )


def test_replay_rebuilds_the_lists(db: Any) -> None:
    deliver(db.engine, refunded_version(), paid_version())
    apply_all(db.engine)
    before = lists(db.engine)
    assert before["refunds"]
    replay_store(db.engine, STORE)
    assert lists(db.engine) == before


def test_the_batched_copy_path_takes_many_orders(db: Any) -> None:
    # More rows than the COPY threshold for each table, in one fetched page.
    page = []
    for index in range(80):
        event = refunded_version(f"evt_{index:03}")
        event["data"]["id"] = f"ord_{index:03}"
        page.append(event)
    add_and_apply(db.engine, STORE, page, source=EventSource.BACKFILL)
    found = lists(db.engine)
    assert len(found["transactions"]) == 240 and len(found["refund_lines"]) == 80
    assert len(found["fulfillment_lines"]) == 160 and len(found["codes"]) == 80
    assert sum(amount for _, amount in found["refunds"]) == D("7200.00")


# --- store-local time ------------------------------------------------------------------


def local_columns(engine: Engine, store: str) -> dict[str, tuple[Any, Any]]:
    return {
        row["id"]: (row["created_at_local"], row["created_date_local"])
        for row in rows(engine, "orders", store=store)
    }


TIJUANA = StoreConfig("tijuana", timezone="America/Tijuana")
CDMX = StoreConfig("cdmx", timezone="America/Mexico_City")

# America/Tijuana: PST (-08:00) until 2026-03-08 02:00 local, then PDT (-07:00);
# back to PST on 2026-11-01 at 02:00 PDT (01:00 to 02:00 happens twice).
TIJUANA_CASES = {
    # before the spring change: 01:59:59 PST
    "ord_spring_before": ("2026-03-08T09:59:59Z", datetime(2026, 3, 8, 1, 59, 59)),
    # one second later the clock jumps to 03:00 PDT
    "ord_spring_after": ("2026-03-08T10:00:00Z", datetime(2026, 3, 8, 3, 0, 0)),
    # the repeated hour in autumn: 01:30 PDT, then 01:30 PST an hour later
    "ord_fall_first": ("2026-11-01T08:30:00Z", datetime(2026, 11, 1, 1, 30)),
    "ord_fall_second": ("2026-11-01T09:30:00Z", datetime(2026, 11, 1, 1, 30)),
    # a date boundary: 06:59 UTC on the 2nd is 23:59 PDT on the 1st of July
    "ord_summer_night": ("2026-07-02T06:59:00Z", datetime(2026, 7, 1, 23, 59)),
    # the same UTC hour in winter is 22:59 PST
    "ord_winter_night": ("2026-12-02T06:59:00Z", datetime(2026, 12, 1, 22, 59)),
}


def test_tijuana_local_times_follow_daylight_saving(db: Any) -> None:
    for order_id, (created, _) in TIJUANA_CASES.items():
        deliver(db.engine, placed(order_id, created), store=TIJUANA.name)
    apply_all(db.engine, TIJUANA)
    assert local_columns(db.engine, TIJUANA.name) == {
        order_id: (wall, wall.date()) for order_id, (_, wall) in TIJUANA_CASES.items()
    }


def test_two_stores_keep_their_own_zones(db: Any) -> None:
    # 01:30 UTC on the 2nd: the 1st in both zones, at different hours.
    for store in (TIJUANA, CDMX):
        deliver(db.engine, placed("ord_1", "2026-12-02T01:30:00Z"), store=store.name)
        deliver(db.engine, placed("ord_2", "2026-12-02T07:30:00Z"), store=store.name)
        apply_all(db.engine, store)
    assert local_columns(db.engine, TIJUANA.name) == {
        "ord_1": (datetime(2026, 12, 1, 17, 30), date(2026, 12, 1)),
        "ord_2": (datetime(2026, 12, 1, 23, 30), date(2026, 12, 1)),
    }
    assert local_columns(db.engine, CDMX.name) == {
        "ord_1": (datetime(2026, 12, 1, 19, 30), date(2026, 12, 1)),
        "ord_2": (datetime(2026, 12, 2, 1, 30), date(2026, 12, 2)),
    }


def test_a_changed_zone_recomputes_that_store_before_anything_else(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    for store in (TIJUANA, CDMX):
        event = refunded_version(f"evt_{store.name}")
        event["data"]["created_at"] = "2026-12-02T05:30:00Z"
        deliver(db.engine, event, store=store.name)
        apply_all(db.engine, store)
    cdmx_before = local_columns(db.engine, CDMX.name)
    assert local_columns(db.engine, TIJUANA.name) == {
        "ord_1": (datetime(2026, 12, 1, 21, 30), date(2026, 12, 1))
    }

    # Restarted with Tijuana's store moved to Mexico City's zone.
    moved = StoreConfig("tijuana", timezone="America/Mexico_City")
    caplog.set_level(logging.INFO, logger="syncd.localtime")
    caplog.clear()
    localtime.ensure_zones(db.engine, [moved, CDMX])
    messages = [r for r in caplog.records if r.getMessage() == "localtime.recomputed"]
    assert len(messages) == 1
    assert (messages[0].store, messages[0].from_zone, messages[0].to_zone) == (  # type: ignore[attr-defined]
        "tijuana",
        "America/Tijuana",
        "America/Mexico_City",
    )
    assert local_columns(db.engine, TIJUANA.name) == {
        "ord_1": (datetime(2026, 12, 1, 23, 30), date(2026, 12, 1))
    }
    [tj_refund] = rows(db.engine, "order_refunds", store=TIJUANA.name)
    assert tj_refund["created_at_local"] == datetime(2026, 11, 28, 19, 30)
    assert local_columns(db.engine, CDMX.name) == cdmx_before  # untouched

    # A second start with the same zone does nothing.
    caplog.clear()
    localtime.ensure_zones(db.engine, [moved, CDMX])
    assert not [r for r in caplog.records if r.getMessage() == "localtime.recomputed"]


def test_the_worker_recomputes_before_it_writes_with_a_new_zone(db: Any) -> None:
    deliver(db.engine, placed("ord_old", "2026-12-02T05:30:00Z"), store=TIJUANA.name)
    apply_all(db.engine, TIJUANA)
    moved = StoreConfig("tijuana", timezone="America/Mexico_City")
    deliver(db.engine, placed("ord_new", "2026-12-02T05:30:00Z"), store=moved.name)
    apply_all(db.engine, moved)  # no start-up step: the apply path checks too
    both = local_columns(db.engine, TIJUANA.name)
    assert both["ord_old"] == both["ord_new"] == (datetime(2026, 12, 1, 23, 30), date(2026, 12, 1))
    with db.engine.connect() as conn:
        assert localtime.recorded_zone(conn, TIJUANA.name) == "America/Mexico_City"


def test_a_value_too_long_for_its_column_fails_its_event_naming_the_entry(db: Any) -> None:
    long = refunded_version("evt_long")
    long["data"]["fulfillments"][1]["tracking_company"] = "x" * 300
    long["data"]["refunds"][0]["line_items"][0]["quantity"] = 2**40
    deliver(db.engine, long)
    apply_all(db.engine)
    assert event_status(db.engine, "evt_long") == (
        "failed",
        "data.refunds[0].line_items[0].quantity: out of range",
    )
    del long["data"]["refunds"]
    long["id"] = "evt_long_2"
    deliver(db.engine, long)
    apply_all(db.engine)
    assert event_status(db.engine, "evt_long_2") == (
        "failed",
        "data.fulfillments[1].tracking_company: longer than 255 characters",
    )
