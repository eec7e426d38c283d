"""``replay_store``: the normalized tables rebuilt from the stored events (docs/apply-rules.md).

The events are first applied the usual way (inbox + worker); a replay must
then give the very same tables, also after somebody has changed or deleted
rows by hand, and must never apply a rejected event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, update

from syncd.config import Secret, StoreConfig
from syncd.db.models import NORMALIZED, Event, metadata
from syncd.replay import replay_store
from syncd.shoperti import wire
from syncd.vocabulary import VerifyMode
from syncd.worker import Verdict, Verified, VerifyLater, record_verdicts
from tests.factories import (
    customer_data,
    customer_event,
    envelope,
    line_item,
    order_event,
    sparse_delete,
)
from tests.support import (
    REFUSED_SKU,
    STORE,
    apply_all,
    database_refusing,
    deliver,
    event_status,
    rows,
    snapshot,
)

T = metadata.tables


def history_of_a_shop() -> list[dict[str, Any]]:
    """A bit of everything: versions out of order, ties, nested customers,
    deletions, an ignored type and a malformed event."""
    return [
        order_event("evt_01", order_id="ord_a", updated_at=1, customer=customer_data("cus_a")),
        order_event(
            "evt_02",
            order_id="ord_a",
            updated_at=3,
            type="order.paid",
            financial_status="paid",
            line_items=[line_item("li_2", quantity=2), line_item("li_3", price="0.10")],
        ),
        order_event("evt_03", order_id="ord_a", updated_at=2, note="older, arrives late"),
        order_event("evt_04", order_id="ord_b", updated_at=3, created_at=4, total="10.10"),
        order_event("evt_05", order_id="ord_b", updated_at=3, created_at=4, total="20.20"),
        order_event("evt_06", order_id="ord_c", updated_at=5, billing_address=None),
        sparse_delete("evt_07", "order", "ord_c", created_at=6),
        customer_event("evt_08", customer_id="cus_a", updated_at=4, first_name="Ana María"),
        customer_event("evt_09", customer_id="cus_b", updated_at=1, type="customer.created"),
        customer_event("evt_10", customer_id="cus_b", updated_at=2, type="customer.deleted"),
        envelope("evt_11", "product.updated", 1, {"id": "prod_1"}),
        envelope("evt_12", "refund.created", 1, {"id": "ref_1"}),
        order_event("evt_13", order_id="ord_d", total="12,50"),
    ]


def applied_shop(engine: Engine, store: str = STORE.name) -> dict[str, list[dict[str, Any]]]:
    deliver(engine, *history_of_a_shop(), store=store)
    report = apply_all(engine, StoreConfig(store), limit=3)
    assert (report.applied, report.ignored, report.failed) == (10, 2, 1)
    return snapshot(engine, store=store)


def event_states(engine: Engine) -> list[tuple[str, str, str | None]]:
    return [(row["id"], row["status"], row["last_error"]) for row in rows(engine, "events")]


def test_replay_clears_every_table_apply_writes() -> None:
    # A table added to the models is either bookkeeping or the store's data,
    # which replay must clear and rebuild (and the tests' snapshots compare).
    bookkeeping = {"events", "sync_state", "refresh_requests"}
    assert set(NORMALIZED) == set(metadata.tables) - bookkeeping
    assert len(NORMALIZED) == len(set(NORMALIZED))


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_replay_rebuilds_the_same_tables(db: Any, chunk: int) -> None:
    before = applied_shop(db.engine)
    states = event_states(db.engine)
    assert len(before["orders"]) == 3 and len(before["order_status_history"]) == 6

    report = replay_store(db.engine, STORE, chunk=chunk)

    assert (report.applied, report.ignored, report.failed) == (10, 2, 1)
    assert snapshot(db.engine) == before
    assert event_states(db.engine) == states


def test_replay_repairs_tampered_tables(db: Any) -> None:
    before = applied_shop(db.engine)
    with db.engine.begin() as conn:
        conn.execute(delete(T["order_line_items"]).where(T["order_line_items"].c.id == "li_2"))
        conn.execute(update(T["orders"]).where(T["orders"].c.id == "ord_a").values(total=0))
        conn.execute(update(T["orders"]).values(deleted=False))
        conn.execute(delete(T["customers"]).where(T["customers"].c.id == "cus_a"))
        conn.execute(delete(T["customer_addresses"]))
        conn.execute(
            delete(T["order_status_history"]).where(T["order_status_history"].c.event_id < "evt_04")
        )
        conn.execute(delete(T["order_addresses"]).where(T["order_addresses"].c.kind == "shipping"))
        conn.execute(
            update(T["customers"]).where(T["customers"].c.id == "cus_b").values(first_name="X")
        )
        conn.execute(
            insert(T["orders"]).values(
                store="default",
                id="ord_forged",
                deleted=False,
                raw={},
                synced_at=datetime.now(UTC),
            )
        )
    assert snapshot(db.engine) != before

    replay_store(db.engine, STORE)

    assert snapshot(db.engine) == before


def test_rejected_events_are_not_replayed(db: Any) -> None:
    forged = order_event("evt_forged", order_id="ord_forged", total="99999.00")
    deliver(db.engine, order_event("evt_1", order_id="ord_a"), forged)
    # What the verifier does to an id the API does not know.
    events = T["events"]
    with db.engine.begin() as conn:
        conn.execute(
            update(events)
            .where(events.c.id == "evt_forged")
            .values(status="rejected", last_error="the API does not know this event id")
        )
    apply_all(db.engine)
    before = snapshot(db.engine)

    report = replay_store(db.engine, STORE)

    assert report.applied == 1 and report.rejected == 0
    assert snapshot(db.engine) == before
    assert [row["id"] for row in rows(db.engine, "orders")] == ["ord_a"]
    assert event_states(db.engine) == [
        ("evt_1", "applied", None),
        ("evt_forged", "rejected", "the API does not know this event id"),
    ]


def test_pending_events_are_left_to_the_worker(db: Any) -> None:
    applied_shop(db.engine)
    deliver(db.engine, order_event("evt_late", order_id="ord_late"))

    replay_store(db.engine, STORE)

    assert "ord_late" not in {row["id"] for row in rows(db.engine, "orders")}
    assert ("evt_late", "pending", None) in event_states(db.engine)
    assert apply_all(db.engine).applied == 1
    assert "ord_late" in {row["id"] for row in rows(db.engine, "orders")}


def test_replay_touches_only_its_store(db: Any) -> None:
    default = applied_shop(db.engine, "default")
    applied_shop(db.engine, "other")
    with db.engine.begin() as conn:
        conn.execute(delete(T["order_line_items"]).where(T["order_line_items"].c.store == "other"))
    tampered_other = snapshot(db.engine, store="other")

    replay_store(db.engine, STORE)

    assert snapshot(db.engine, store="default") == default
    assert snapshot(db.engine, store="other") == tampered_other
    assert tampered_other["order_line_items"] == []


def test_replay_gives_the_tables_of_events_applied_in_order(db: Any) -> None:
    """Applied newest first, one per batch; replayed in id order, in chunks."""
    events = [
        order_event("evt_c", order_id="ord_a", updated_at=3, customer=customer_data(updated_at=3)),
        order_event("evt_b", order_id="ord_a", updated_at=2, customer=customer_data(updated_at=2)),
        order_event("evt_a", order_id="ord_a", updated_at=1, line_items=[]),
    ]
    for event in events:
        deliver(db.engine, event)
        apply_all(db.engine)
    before = snapshot(db.engine)
    assert before["orders"][0]["last_event_id"] == "evt_c"
    replay_store(db.engine, STORE, chunk=1)
    assert snapshot(db.engine) == before


@pytest.mark.parametrize("chunk", [1, 1000])
def test_replay_survives_an_event_the_database_refuses(db: Any, chunk: int) -> None:
    refused = order_event(
        "evt_2",
        order_id="ord_b",
        customer=customer_data("cus_b"),
        line_items=[line_item("li_1"), line_item("li_2", sku=REFUSED_SKU)],
    )
    deliver(db.engine, order_event("evt_1", order_id="ord_a"), refused)
    deliver(db.engine, order_event("evt_3", order_id="ord_c"))
    assert apply_all(db.engine).applied == 3  # the database took all of them then
    before = snapshot(db.engine)

    with database_refusing(db):  # ... and now refuses one
        report = replay_store(db.engine, STORE, chunk=chunk)

        assert (report.applied, report.failed) == (2, 1)
        assert event_states(db.engine)[0::2] == [
            ("evt_1", "applied", None),
            ("evt_3", "applied", None),
        ]
        status, error = event_status(db.engine, "evt_2")
        assert status == "failed"
        assert error is not None and error.startswith("database error: "), error
        # The other events are replayed in full; nothing of the refused one is left.
        without_b = {
            name: [row for row in table if "ord_b" not in (row.get("order_id"), row.get("id"))]
            for name, table in before.items()
        }
        without_b["customers"] = without_b["customer_addresses"] = []  # cus_b came with ord_b
        assert len(without_b["order_line_items"]) == len(without_b["order_status_history"]) == 2
        assert snapshot(db.engine) == without_b
        assert [row["id"] for row in rows(db.engine, "orders")] == ["ord_a", "ord_c"]

    # A failed event is replayed too: once the database takes it, all is back.
    report = replay_store(db.engine, STORE, chunk=chunk)
    assert (report.applied, report.failed) == (3, 0)
    assert snapshot(db.engine) == before
    assert {status for _, status, _ in event_states(db.engine)} == {"applied"}


def test_replay_never_applies_an_unverified_event_in_api_mode(db: Any) -> None:
    store = StoreConfig(
        "default",
        api_url="https://shop.example/v1",
        api_key=Secret("sk_test_9x8"),
        verify=VerifyMode.API,
    )
    genuine = order_event("evt_genuine", order_id="ord_genuine", total="116.00")
    broken = order_event("evt_broken", order_id="ord_broken", total="12,50")
    deliver(
        db.engine,
        order_event("evt_forged", order_id="ord_forged"),
        order_event("evt_genuine", order_id="ord_genuine", total="0.01"),  # posted: a hint
        broken,
    )
    verdicts: list[Verdict] = [
        VerifyLater("evt_forged", "verification failed: API unavailable"),
        Verified("evt_genuine", genuine, wire.parse_event(genuine)),
        Verified("evt_broken", broken, wire.parse_event(broken)),
    ]
    attempts = {"evt_forged": 7, "evt_genuine": 0, "evt_broken": 0}
    record_verdicts(db.engine, "default", verdicts, attempts)
    # An API outage never fails an event any more (it stays pending); an
    # unverified event can still be 'failed' from before the store switched
    # to api mode, with SYNCD_VERIFY=off. Make it so.
    with db.engine.begin() as conn:
        conn.execute(
            update(Event)
            .where(Event.id == "evt_forged")
            .values(status="failed", last_error="verification failed: API unavailable")
        )
    report = apply_all(db.engine, store)
    assert (report.applied, report.failed) == (1, 1)
    states = [
        ("evt_broken", "failed", "data.total: not a decimal amount"),
        ("evt_forged", "failed", "verification failed: API unavailable"),
        ("evt_genuine", "applied", None),
    ]
    assert event_states(db.engine) == states
    before = snapshot(db.engine)

    report = replay_store(db.engine, store)

    # The verified events are replayed, the failed one included; the unverified not.
    assert (report.applied, report.failed) == (1, 1)
    assert snapshot(db.engine) == before
    orders = rows(db.engine, "orders")
    assert [(row["id"], row["total"]) for row in orders] == [("ord_genuine", Decimal("116.00"))]
    assert event_states(db.engine) == states
