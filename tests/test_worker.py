"""The worker (``syncd.worker``): pages stored and applied in one step, a
batch that the database refuses retried event by event, failed events never
tried again, one store's events only, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from syncd.config import StoreConfig
from syncd.db.models import metadata
from syncd.vocabulary import EventSource
from syncd.worker import add_and_apply, apply_pending
from tests.factories import (
    SECRET_BITS,
    customer_data,
    customer_event,
    envelope,
    line_item,
    order_event,
    private_order,
    sparse_delete,
)
from tests.support import (
    REFUSAL_NAMES,
    REFUSALS,
    REFUSED_SKU,
    STORE,
    apply_all,
    chronological,
    database_refusing,
    deliver,
    event_status,
    order_row,
    rows,
    snapshot,
    write_batches,
)

D = Decimal


def test_a_fetched_page_is_stored_with_its_outcomes_in_one_step(db: Any) -> None:
    good = [private_order("evt_good_1"), private_order("evt_good_2", total="99.90")]
    bad = private_order("evt_bad", total="12,50")
    ignored = envelope("evt_product", "product.updated", 0, {"id": "prod_1"})
    page = [good[0], bad, ignored, good[1], good[0]]  # an event twice in one page

    added = add_and_apply(db.engine, STORE, page, source=EventSource.BACKFILL)

    assert sorted(added.new_ids) == ["evt_bad", "evt_good_1", "evt_good_2", "evt_product"]
    assert added.seen == 5
    events = metadata.tables["events"]
    with db.engine.connect() as conn:
        stored = {row.id: row for row in conn.execute(select(events))}
    assert {i: row.status for i, row in stored.items()} == {
        "evt_good_1": "applied",
        "evt_good_2": "applied",
        "evt_bad": "failed",
        "evt_product": "ignored",
    }
    for row in stored.values():
        assert row.attempts == 1 and row.processed_at is not None and row.verified
        assert row.source == "backfill"
    assert stored["evt_bad"].last_error is not None and "data.total" in stored["evt_bad"].last_error
    assert order_row(db.engine, "ord_evt_good_2")["total"] == D("99.90")
    # Nothing is left for the worker, and the same page again adds nothing.
    assert apply_pending(db.engine, STORE, limit=100, max_attempts=3).claimed == 0
    before = snapshot(db.engine)
    assert add_and_apply(db.engine, STORE, page, source=EventSource.BACKFILL).new_ids == []
    assert snapshot(db.engine) == before


def test_a_failed_event_is_not_tried_again(db: Any) -> None:
    deliver(db.engine, order_event("evt_1", total="12,50"))
    assert apply_all(db.engine).failed == 1
    assert apply_all(db.engine).claimed == 0
    events = rows(db.engine, "events")
    assert [(e["status"], e["attempts"]) for e in events] == [("failed", 1)]


@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_database_error_fails_one_event_alone(
    db: Any, refusal: str, caplog: pytest.LogCaptureFixture
) -> None:
    refused = private_order(
        "evt_refused",
        line_items=[
            line_item("li_1"),
            line_item("li_2", sku=REFUSED_SKU, title="Regalo para Ximena Quetzal"),
        ],
    )
    with database_refusing(db, refusal):
        deliver(db.engine, order_event("evt_1", order_id="ord_a"), refused)
        deliver(db.engine, order_event("evt_2", order_id="ord_b"))

        first = apply_pending(db.engine, STORE, limit=100, max_attempts=2)  # one batch

        assert (first.applied, first.retried, first.failed) == (2, 1, 0)
        assert "apply.batch_failed" in caplog.text  # the batch, then event by event
        status, error = event_status(db.engine, "evt_refused")
        assert status == "pending"
        assert error is not None and error.startswith("database error: "), error
        assert REFUSAL_NAMES[refusal] in error, error  # the database's own words
        # Only the message's first line: PostgreSQL's DETAIL echoes the row.
        assert not any(bit in error for bit in SECRET_BITS), error
        # Nothing of the refused event is kept, not even what was written
        # before its line item (its nested customer, its order row).
        tables = snapshot(db.engine)
        assert [row["id"] for row in tables["orders"]] == ["ord_a", "ord_b"]
        assert [(i["order_id"], i["id"]) for i in tables["order_line_items"]] == [
            ("ord_a", "li_1"),
            ("ord_b", "li_1"),
        ]
        assert {a["order_id"] for a in tables["order_addresses"]} == {"ord_a", "ord_b"}
        assert tables["customers"] == [] and tables["customer_addresses"] == []
        assert {h["event_id"] for h in tables["order_status_history"]} == {"evt_1", "evt_2"}

        # Once its backoff has passed, the last attempt gives up on it.
        events = metadata.tables["events"]
        with db.engine.begin() as conn:
            conn.execute(events.update().values(next_attempt_at=None))
        second = apply_pending(db.engine, STORE, limit=100, max_attempts=2)
        assert (second.failed, second.applied, second.retried) == (1, 0, 0)

    states = {e["id"]: (e["status"], e["attempts"]) for e in rows(db.engine, "events")}
    assert states == {
        "evt_1": ("applied", 1),
        "evt_2": ("applied", 1),
        "evt_refused": ("failed", 2),
    }
    status, error = event_status(db.engine, "evt_refused")
    assert error is not None and error.startswith("database error: "), error
    assert snapshot(db.engine) == tables


def test_a_database_error_in_a_fetched_page_leaves_the_event_to_the_worker(db: Any) -> None:
    refused = private_order("evt_refused", line_items=[line_item("li_2", sku=REFUSED_SKU)])
    page = [order_event("evt_1", order_id="ord_a"), refused]
    with database_refusing(db):
        added = add_and_apply(db.engine, STORE, page, source=EventSource.BACKFILL)
        assert sorted(added.new_ids) == ["evt_1", "evt_refused"]
        status, error = event_status(db.engine, "evt_refused")
        assert status == "pending"
        assert error is not None and error.startswith("database error: "), error
        assert [row["id"] for row in rows(db.engine, "orders")] == ["ord_a"]
    # The refusal is gone: the worker applies it once its backoff has passed.
    events = metadata.tables["events"]
    with db.engine.begin() as conn:
        conn.execute(events.update().values(next_attempt_at=None))
    report = apply_pending(db.engine, STORE, limit=100, max_attempts=3)
    assert report.applied == 1
    states = {e["id"]: (e["status"], e["attempts"]) for e in rows(db.engine, "events")}
    assert states == {"evt_1": ("applied", 1), "evt_refused": ("applied", 2)}
    assert sorted(row["id"] for row in rows(db.engine, "orders")) == ["ord_a", "ord_evt_refused"]


def test_events_of_another_store_are_left_alone(db: Any) -> None:
    deliver(db.engine, order_event("evt_1"), store="other")
    assert apply_all(db.engine).claimed == 0
    assert apply_all(db.engine, StoreConfig("other")).applied == 1
    assert [row["store"] for row in rows(db.engine, "orders")] == ["other"]


def test_replaying_through_the_worker_matches_applying_directly(db: Any) -> None:
    events = [
        order_event("evt_3", order_id="ord_a", updated_at=2, customer=customer_data("cus_a")),
        order_event("evt_1", order_id="ord_a", updated_at=2, created_at=3, status="closed"),
        order_event("evt_2", order_id="ord_a", updated_at=1, type="order.paid"),
        customer_event("evt_4", customer_id="cus_a", updated_at=0, created_at=9),
        sparse_delete("evt_5", "order", "ord_b"),
    ]
    write_batches(db, events, [[event] for event in chronological(events)])
    direct = snapshot(db.engine)
    db.reset()
    deliver(db.engine, *events)
    apply_all(db.engine, limit=2)
    assert snapshot(db.engine) == direct
