"""The inbox (``syncd.inbox``): what goes in is stored as it can be kept on
every database, and the worker's claim takes the oldest events off the queue
index, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event as sa_event

from syncd.db import dialect
from syncd.db.models import metadata
from syncd.inbox import claim, utcnow
from tests.factories import customer_data, envelope, line_item, order_event
from tests.support import STORE, apply_all, customer_row, deliver, order_row, rows


def test_a_nul_character_from_the_api_is_replaced_on_every_database(db: Any) -> None:
    """Reconcile and backfill put the API's events in through the inbox, which
    replaces U+0000 (PostgreSQL's text and JSONB cannot hold it) with U+FFFD."""
    event = order_event(
        "evt_1",
        note="a\u0000b",
        customer=customer_data(first_name="\u0000Ana"),
        line_items=[line_item("li_1", title="Taza\u0000")],
    )
    event["data"]["extra\u0000field"] = ["\u0000"]
    deliver(db.engine, event)
    assert apply_all(db.engine).applied == 1
    order = order_row(db.engine)
    assert (order["note"], order["raw"]["extra\ufffdfield"]) == ("a\ufffdb", ["\ufffd"])
    assert customer_row(db.engine)["first_name"] == "\ufffdAna"
    assert [item["title"] for item in rows(db.engine, "order_line_items")] == ["Taza\ufffd"]
    [stored] = rows(db.engine, "events")
    assert "\\u0000" not in json.dumps(stored["payload"])  # not in a key either
    assert stored["payload"]["data"]["note"] == "a\ufffdb"


def test_the_claim_takes_the_oldest_events_without_sorting_the_backlog(db: Any) -> None:
    """With thousands pending (a catch-up after an outage), each batch must come
    off the queue index in order, not from a sort of the whole backlog — that
    made every batch slower as the backlog grew (32 ms a batch at 6,200)."""
    backlog = [
        envelope(f"evt_{index:05d}", "customer.updated", index / 60, customer_data())
        for index in range(3000)
    ]
    for event in backlog[:3]:  # received one after the other
        deliver(db.engine, event)
    for start in range(3, len(backlog), 500):
        deliver(db.engine, *backlog[start : start + 500])
    with db.engine.begin() as conn:
        dialect.analyze(conn, [metadata.tables["events"]])
    explain = "EXPLAIN QUERY PLAN " if db.kind == "sqlite" else "EXPLAIN "

    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    with db.engine.connect() as conn:
        sa_event.listen(conn, "before_cursor_execute", record)
        conn.execute(claim(STORE, utcnow(), 200)).all()
        statement, parameters = sent[-1]  # the claim as the driver received it
        plan = " ".join(str(row) for row in conn.exec_driver_sql(explain + statement, parameters))
        conn.rollback()
    assert "ix_events_queue" in plan, plan
    sorting = {"postgresql": "Sort", "mariadb": "filesort", "sqlite": "TEMP B-TREE"}[db.kind]
    assert sorting not in plan, plan
    # And the claim itself: the oldest first.
    with db.engine.connect() as conn:
        first = conn.execute(claim(STORE, utcnow(), 3)).all()
        conn.rollback()
    assert [row.id for row in first] == ["evt_00000", "evt_00001", "evt_00002"]
