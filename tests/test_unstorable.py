"""JSON that parses but cannot be stored (nested deeper than MariaDB's JSON
check allows, the lowest limit of the three databases):
a 4xx at the receiver, a failed event from the API — never a 503 that the
platform retries for two days, and never a reconcile that stops on it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from sqlalchemy import select

from syncd.config import load_settings
from syncd.db.models import Event
from syncd.reconcile import reconcile_store, sync_resource
from syncd.shoperti import wire
from syncd.shoperti.client import ShopertiClient
from syncd.state import write_state
from tests.factories import nested, order_event
from tests.support import STORE, assert_error, daemon, order_row

API = "https://api.example.test/v1"
KEY = "sk_test_unstorable"


def deep_order_event(event_id: str, depth: int) -> dict[str, Any]:
    return order_event(event_id, order_id=f"ord_{event_id}", note_extra=nested(depth))


def events_in(engine: Any) -> dict[str, tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(Event.id, Event.status, Event.last_error))
        return {row.id: (row.status, row.last_error) for row in rows}


def page(items: list[dict[str, Any]]) -> httpx.Response:
    meta = {"pagination": {"total": len(items), "current_page": 1, "total_pages": 1}}
    return httpx.Response(200, content=json.dumps({"data": items, "meta": meta}))


def test_the_receiver_refuses_what_it_cannot_store(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False) as client:
        too_deep = client.post("/webhooks/shoperti", json=deep_order_event("evt_deep", 40))
        reason = assert_error(too_deep, 400)
        assert "nested deeper" in reason
        fine = client.post(
            "/webhooks/shoperti", json=deep_order_event("evt_ok", wire.MAX_JSON_DEPTH - 2)
        )
        assert fine.status_code == 200, fine.text
    assert set(events_in(db.engine)) == {"evt_ok"}


def test_an_unstorable_listed_event_fails_alone_and_reconcile_goes_on(db: Any) -> None:
    listed = [
        order_event("evt_before", order_id="ord_a"),
        deep_order_event("evt_deep", 400),
        order_event("evt_after", order_id="ord_b"),
    ]
    settings = load_settings({"SYNCD_DATABASE_URL": db.url, "SYNCD_RECONCILE_LOOKBACK": "0"})
    store = settings.store()
    write_state(db.engine, store.name, "events_cursor", {"at": "2026-11-27T00:00:00+00:00"})

    async def run() -> Any:
        transport = httpx.MockTransport(lambda request: page(listed))
        async with ShopertiClient(API, KEY, transport=transport) as client:
            return await reconcile_store(db.engine, settings, store, client, apply_now=True)

    report = asyncio.run(run())
    assert report.error is None, report.error
    assert report.mode == "events"
    found = events_in(db.engine)
    assert found["evt_before"][0] == found["evt_after"][0] == "applied"
    status, error = found["evt_deep"]
    assert status == "failed" and error is not None and "nested deeper" in error
    # The next run knows it and stops at nothing either.
    again = asyncio.run(run())
    assert (again.error, again.found) == (None, 0)


def test_an_unstorable_order_in_a_backfill_page_fails_alone(db: Any) -> None:
    orders = [
        order_event("x1", order_id="ord_a")["data"],
        deep_order_event("x2", 400)["data"],
        order_event("x3", order_id="ord_b")["data"],
    ]

    async def run() -> tuple[int, int]:
        transport = httpx.MockTransport(lambda request: page(orders))
        async with ShopertiClient(API, KEY, transport=transport) as client:
            return await sync_resource(db.engine, STORE, client, "orders", None)

    assert asyncio.run(run()) == (3, 3)
    assert order_row(db.engine, "ord_a")["status"] == "open"
    assert order_row(db.engine, "ord_b")["status"] == "open"
    statuses = sorted(status for status, _ in events_in(db.engine).values())
    assert statuses == ["applied", "applied", "failed"]
