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


def _order_rows(count: int, when: datetime, **changes: object) -> list[dict[str, object]]:
    return [
        {
            "store": "s",
            "id": f"o{index:03d}",
            "number": index,
            "currency": "MXN",
            "total": Decimal("1234567890.1234") + index,
            "created_at": when,
            "updated_at": when,
            "deleted": False,
            "raw": {"id": f"o{index:03d}", "note": "frágil \ufffd", "n": [1, None]},
            "synced_at": when,
            **changes,
        }
        for index in range(count)
    ]


def test_many_rows_keep_exact_types_and_conflict_rules(db: TestDatabase) -> None:
    # Enough rows for PostgreSQL's COPY-through-a-staging-table path; the
    # values must come back exactly as with row-by-row statements.
    from syncd.db.models import Order

    orders = Order.__table__
    count = dialect.STAGED_MIN_ROWS + 6
    mexico = timezone(timedelta(hours=-6))
    when = datetime(2026, 11, 27, 18, 4, 5, 123456, tzinfo=mexico)
    first = _order_rows(count, when)
    later = _order_rows(count, when + timedelta(hours=1), total=Decimal("0.0001"))
    columns = [name for name in first[0] if name not in ("store", "id")]
    with db.engine.begin() as conn:
        # Into an empty table: PostgreSQL COPYs these straight in.
        dialect.upsert(conn, orders, first, update=columns, expect_new=True)
    with db.engine.begin() as conn:
        # A key twice in one call: the last row wins, as row by row.
        dialect.upsert(conn, orders, [*later[:-1], {**later[0], "number": 999}], update=columns)
        dialect.insert_ignoring_duplicates(conn, orders, first)  # all present: nothing changes
    with db.engine.connect() as conn:
        rows = {row.id: row for row in conn.execute(select(orders))}
    assert len(rows) == count
    assert rows["o000"].number == 999 and rows["o000"].total == Decimal("0.0001")
    assert rows["o001"].updated_at == when + timedelta(hours=1)
    assert rows["o001"].updated_at.tzinfo == UTC
    untouched = rows[f"o{count - 1:03d}"]  # left out of the second upsert
    assert untouched.total == Decimal("1234567890.1234") + count - 1
    assert untouched.raw == {"id": untouched.id, "note": "frágil \ufffd", "n": [1, None]}
    assert untouched.updated_at == when


def test_rows_expected_new_that_are_not_follow_the_conflict_rules(db: TestDatabase) -> None:
    # A caller that believed its keys new and was wrong (a row written in the
    # meantime) gets what the ordinary path gives, in the same transaction.
    from syncd.db.models import Order

    orders = Order.__table__
    count = dialect.STAGED_MIN_ROWS + 6
    when = datetime(2026, 11, 27, 18, 4, 5, tzinfo=UTC)
    first = _order_rows(count, when)
    later = _order_rows(count, when + timedelta(hours=1), total=Decimal("0.0001"))
    columns = [name for name in first[0] if name not in ("store", "id")]
    with db.engine.begin() as conn:
        dialect.upsert(conn, orders, first[:10], update=columns)
    with db.engine.begin() as conn:
        dialect.upsert(conn, orders, later, update=columns, expect_new=True)
        dialect.insert_ignoring_duplicates(conn, orders, first, expect_new=True)
        assert conn.execute(select(orders.c.id).where(orders.c.id == "o000")).scalar() == "o000"
    with db.engine.connect() as conn:
        rows = list(conn.execute(select(orders.c.total, orders.c.updated_at)))
    assert len(rows) == count
    assert {(row.total, row.updated_at) for row in rows} == {
        (Decimal("0.0001"), when + timedelta(hours=1))
    }
