"""The version order (docs/apply-rules.md) across sources: Shoperti's events
(webhooks, reconcile) and syncd's snapshots (backfill, resource sync, refresh),
whole-second ties included, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from syncd.apply import SNAPSHOT_MARGIN
from syncd.config import StoreConfig
from syncd.db.models import RefreshRequest
from syncd.reconcile import refresh_undecided
from syncd.replay import replay_store
from syncd.shoperti import wire
from syncd.shoperti.client import ShopertiClient
from syncd.vocabulary import EventSource
from syncd.worker import add_and_apply
from tests.factories import BASE, order_data
from tests.support import STORE, apply_all, deliver, order_row, rows

API = "https://api.example.test/v1"
KEY = "sk_test_versions"


def moment(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def whole(seconds: float) -> str:
    """The platform's spelling of a time: whole seconds, Mexico City offset."""
    return moment(math.floor(seconds)).isoformat()


def webhook(event_id: str, changed: float, **order: Any) -> dict[str, Any]:
    """Shoperti's event for a change at ``changed`` (seconds after BASE)."""
    data = order_data(**order)
    data["updated_at"] = whole(changed)
    return {
        "id": event_id,
        "object": "event",
        "type": "order.updated",
        "created_at": whole(changed),
        "data": data,
    }


def read(event: dict[str, Any], read_at: float, *, distinct: bool = False) -> dict[str, Any]:
    """A copy of ``event``'s order as the API lists it, read at ``read_at``."""
    return wire.snapshot_event("order", event["data"], moment(read_at), distinct=distinct)


def backfill(engine: Engine, *snapshots: dict[str, Any]) -> None:
    add_and_apply(engine, STORE, list(snapshots), source=EventSource.BACKFILL)


def refresh_requests(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.scalars(select(RefreshRequest.resource_id)))


# --- snapshot ids ---------------------------------------------------------------------


def test_two_different_copies_never_share_a_snapshot_id() -> None:
    first = webhook("evt_1", 5.2, status="open")
    second = webhook("evt_2", 5.7, status="closed")  # the same whole second
    assert first["data"]["updated_at"] == second["data"]["updated_at"]
    assert read(first, 5.3)["id"] != read(second, 5.8)["id"]


def test_the_same_copy_read_twice_is_one_snapshot() -> None:
    event = webhook("evt_1", 5)
    reordered = dict(reversed(list(event["data"].items())))
    assert read(event, 6)["id"] == wire.snapshot_event("order", reordered, moment(60))["id"]
    # A copy read to settle a tie must be applied even if it was read before.
    assert read(event, 6, distinct=True)["id"] != read(event, 60, distinct=True)["id"]


def test_a_snapshot_carries_its_read_time() -> None:
    snap = read(webhook("evt_1", 5), 12.25)
    assert wire.parse_event(snap).created_at == moment(12.25)


# --- the traced defect: an older copy read in the same second ------------------------


@pytest.mark.parametrize("snapshot_first", [False, True])
def test_a_copy_read_before_the_event_never_beats_it(db: Any, snapshot_first: bool) -> None:
    # The order is paid at 5.1 and fulfilled at 5.6 (the same whole second);
    # backfill read the paid copy at 5.3, between the two.
    paid = webhook("evt_paid", 5.1, financial_status="paid")
    fulfilled = webhook("evt_zz_fulfilled", 5.6, financial_status="paid", status="closed")
    stale_copy = read(paid, 5.3)
    if snapshot_first:
        backfill(db.engine, stale_copy)
    deliver(db.engine, fulfilled)
    apply_all(db.engine)
    if not snapshot_first:
        backfill(db.engine, stale_copy)
    assert order_row(db.engine)["status"] == "closed"
    # The snapshot was read within the clock margin of the event: whether it
    # saw the change is a guess, so the current copy is asked for.
    assert refresh_requests(db.engine) == ["ord_1"]


def test_a_copy_read_well_after_the_event_wins(db: Any) -> None:
    opened = webhook("evt_zz", 5.1, status="open")
    closed = webhook("evt_aa", 5.6, status="closed")  # its webhook is lost
    deliver(db.engine, opened)
    apply_all(db.engine)
    backfill(db.engine, read(closed, 5.6 + SNAPSHOT_MARGIN.total_seconds() + 1))
    assert order_row(db.engine)["status"] == "closed"
    assert refresh_requests(db.engine) == []


# --- ties between Shoperti's own events -------------------------------------------------


class CurrentCopies:
    """The API's single-order endpoint, answering the store's current copy."""

    def __init__(self, orders: dict[str, dict[str, Any]]) -> None:
        self.orders = orders
        self.asked: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        order_id = request.url.path.rsplit("/", 1)[-1]
        self.asked.append(order_id)
        if order_id not in self.orders:
            return httpx.Response(404, json={"error": "not found"})
        return httpx.Response(200, content=json.dumps({"data": self.orders[order_id]}))

    def refresh(self, engine: Engine, store: StoreConfig = STORE) -> int:
        async def run() -> int:
            transport = httpx.MockTransport(self.handler)
            async with ShopertiClient(API, KEY, transport=transport) as client:
                return await refresh_undecided(engine, store, client)

        return asyncio.run(run())


@pytest.mark.parametrize("order", ["newest first", "newest last"])
def test_a_tie_of_two_events_is_settled_by_the_current_copy(db: Any, order: str) -> None:
    # Two changes in one second: the ids would pick the older one ("zz" > "aa").
    older = webhook("evt_zz", 5.2, status="open", note="first")
    newer = webhook("evt_aa", 5.8, status="closed", note="second")
    for event in [newer, older] if order == "newest first" else [older, newer]:
        deliver(db.engine, event)
        apply_all(db.engine)
    assert refresh_requests(db.engine) == ["ord_1"]
    api = CurrentCopies({"ord_1": newer["data"]})
    assert api.refresh(db.engine) == 1
    assert api.asked == ["ord_1"]
    assert (order_row(db.engine)["status"], order_row(db.engine)["note"]) == ("closed", "second")
    assert refresh_requests(db.engine) == []
    assert api.refresh(db.engine) == 0  # nothing left to ask


def test_a_tie_of_identical_copies_needs_no_refresh(db: Any) -> None:
    # order.paid and order.updated for one change: the same content.
    deliver(db.engine, webhook("evt_a", 5, status="open"), webhook("evt_b", 5, status="open"))
    apply_all(db.engine)
    assert refresh_requests(db.engine) == []


def test_a_refresh_for_an_order_the_api_no_longer_has_is_dropped(db: Any) -> None:
    deliver(db.engine, webhook("evt_zz", 5.2, note="a"), webhook("evt_aa", 5.8, note="b"))
    apply_all(db.engine)
    api = CurrentCopies({})
    assert api.refresh(db.engine) == 0
    assert refresh_requests(db.engine) == []


# --- any interleaving ends at the newest version -------------------------------------------


@dataclass(frozen=True)
class History:
    """Versions of one order at true times, and what syncd is handed of them."""

    changes: list[float]  # true time of each version's change, increasing
    event_ids: list[str]  # Shoperti's id of each version's event (random spelling)
    reads: list[float]  # true times at which a backfill read the order
    steps: list[tuple[str, int]]  # ("event", version) or ("read", index), in delivery order
    apply_after: list[bool]  # per step: run the worker right after it

    def version_at(self, moment: float) -> int | None:
        current = None
        for index, changed in enumerate(self.changes):
            if changed <= moment:
                current = index
        return current


@st.composite
def histories(draw: st.DrawFn) -> History:
    gaps = draw(st.lists(st.sampled_from([0.1, 0.3, 0.6, 1.2, 2.5, 4.0]), min_size=1, max_size=5))
    changes, now = [], 0.05
    for gap in gaps:
        now += gap
        changes.append(round(now, 3))
    ids = draw(
        st.lists(
            st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=6, max_size=6),
            min_size=len(changes),
            max_size=len(changes),
            unique=True,
        )
    )
    reads = draw(
        st.lists(st.floats(changes[0], changes[-1] + 5, allow_nan=False), max_size=4).map(
            lambda found: [round(at, 3) for at in found]
        )
    )
    steps = [("event", index) for index in range(len(changes))]
    steps += [("read", index) for index in range(len(reads))]
    steps = draw(st.permutations(steps))
    apply_after = draw(st.lists(st.booleans(), min_size=len(steps), max_size=len(steps)))
    return History(changes, [f"evt_{i}" for i in ids], reads, list(steps), apply_after)


def events_of(history: History) -> list[dict[str, Any]]:
    return [
        webhook(event_id, changed, note=f"version {index}", number=1000 + index)
        for index, (changed, event_id) in enumerate(
            zip(history.changes, history.event_ids, strict=True)
        )
    ]


def play(engine: Engine, history: History) -> None:
    events = events_of(history)
    for (kind, index), apply_now in zip(history.steps, history.apply_after, strict=True):
        if kind == "event":
            deliver(engine, events[index])
        else:
            seen = history.version_at(history.reads[index])
            if seen is not None:
                backfill(engine, read(events[seen], history.reads[index]))
        if apply_now:
            apply_all(engine)
    apply_all(engine)
    # Reconcile's next run settles what the events could not.
    CurrentCopies({"ord_1": events[-1]["data"]}).refresh(engine)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories())
def test_any_interleaving_ends_at_the_newest_version(db: Any, history: History) -> None:
    db.reset()
    play(db.engine, history)
    newest = len(history.changes) - 1
    assert order_row(db.engine)["note"] == f"version {newest}"
    assert refresh_requests(db.engine) == []
    before = rows(db.engine, "orders")
    replay_store(db.engine, STORE)
    assert rows(db.engine, "orders") == before
