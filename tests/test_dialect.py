"""The dialect module's promises, on each database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from sqlalchemy import select, text

from syncd.db import dialect
from syncd.db.models import Event, SyncState
from tests.conftest import TestDatabase


def test_a_reader_is_not_held_up_by_a_writer(db: TestDatabase) -> None:
    state = SyncState.__table__
    with db.engine.connect() as writer:
        writer.execute(
            state.insert().values(store="s", name="n", value={"a": 1}, updated_at=datetime.now(UTC))
        )
        # The writer's transaction is open (on SQLite it holds the write lock).
        done = threading.Event()

        def read() -> None:
            with dialect.reading(db.engine) as reader:
                reader.execute(text("SELECT 1"))
                assert reader.scalar(select(state.c.name)) is None  # not committed yet
            done.set()

        thread = threading.Thread(target=read)
        thread.start()
        assert done.wait(5), "a read waited for the writer"
        thread.join()
        writer.commit()


def test_session_lock_admits_one_holder(db: TestDatabase) -> None:
    with db.engine.connect() as first, db.engine.connect() as second:
        with dialect.session_lock(first, "job:x") as got_first:
            assert got_first
            with dialect.session_lock(second, "job:x") as got_second:
                assert not got_second
            with dialect.session_lock(second, "job:other") as got_other:
                assert got_other
        with dialect.session_lock(second, "job:x") as got_after:
            assert got_after


def test_utc_and_money_round_trip(db: TestDatabase) -> None:
    mexico = timezone(timedelta(hours=-6))
    when = datetime(2026, 11, 27, 18, 4, 5, 123456, tzinfo=mexico)
    row = {
        "store": "s",
        "id": "e1",
        "type": "order.paid",
        "resource": "order",
        "resource_id": "o1",
        "created_at": when,
        "received_at": when,
        "source": "webhook",
        "status": "pending",
        "verified": False,
        "attempts": 0,
        "payload": {"total": "0.10"},
    }
    with db.engine.begin() as conn:
        dialect.insert_ignoring_duplicates(conn, Event.__table__, [row])
        dialect.insert_ignoring_duplicates(conn, Event.__table__, [{**row, "type": "x.y"}])
    with db.engine.connect() as conn:
        stored = conn.execute(select(Event.type, Event.created_at, Event.payload)).one()
    assert stored.type == "order.paid"  # the duplicate changed nothing
    assert stored.created_at == when and stored.created_at.tzinfo == UTC
    assert stored.payload == {"total": "0.10"}
    money = dialect.Money()
    assert money.process_result_value(0.1 + 0.2, db.engine.dialect) == Decimal("0.3000")
