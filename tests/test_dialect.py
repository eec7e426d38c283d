"""The dialect module's promises, on each database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text

from syncd.db import dialect
from syncd.db.models import Event, metadata
from tests.conftest import TestDatabase
from tests.factories import BASE, MEXICO_CITY, envelope, line_item, order_data, order_event, utc_at
from tests.support import apply_all, assert_all_times_utc, deliver, rows, snapshot

D = Decimal


def test_a_reader_is_not_held_up_by_a_writer(db: TestDatabase) -> None:
    state = metadata.tables["sync_state"]
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
        dialect.insert_ignoring_duplicates(conn, metadata.tables["events"], [row])
        dialect.insert_ignoring_duplicates(
            conn, metadata.tables["events"], [{**row, "type": "x.y"}]
        )
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

    orders = metadata.tables["orders"]
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

    orders = metadata.tables["orders"]
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


# --- money and time through the apply path read back exactly ----------------------------

PRICES = ["0.10", "0.20", "0.30", 19.99, "1234567.89", 0.01, "99999.99", 250, "3.33", 1e-2]


def money_orders() -> list[dict[str, Any]]:
    """Forty orders with awkward amounts (strings and JSON numbers) and timestamps
    in three spellings (-06:00, Z, naive)."""
    events = []
    for n in range(40):
        a, b = PRICES[n % len(PRICES)], PRICES[(n * 7 + 3) % len(PRICES)]
        items = [
            line_item("li_1", price=str(a), total=a),
            line_item("li_2", quantity=3, price="0.33", total=b),
        ]
        instant = (BASE + timedelta(days=n, seconds=n, microseconds=n * 1001)).astimezone(UTC)
        spelled = [
            instant.astimezone(MEXICO_CITY).isoformat(),
            instant.isoformat().replace("+00:00", "Z"),
            instant.replace(tzinfo=None).isoformat(),
        ][n % 3]
        data = order_data(f"ord_{n:03d}", total=a, subtotal=b, line_items=items)
        data.update(created_at=spelled, updated_at=spelled)
        events.append(envelope(f"evt_{n:03d}", "order.paid", 0, data))
    return events


def exact(amount: Any) -> Decimal:
    return Decimal(repr(amount)) if isinstance(amount, float) else Decimal(str(amount))


def test_money_sums_are_exact(db: Any) -> None:
    events = money_orders()
    deliver(db.engine, *events)
    assert apply_all(db.engine).applied == len(events)

    want_totals = sum(exact(e["data"]["total"]) for e in events)
    want_items = sum(exact(i["total"]) for e in events for i in e["data"]["line_items"])
    orders, items = metadata.tables["orders"], metadata.tables["order_line_items"]
    with db.engine.connect() as conn:
        sql_totals = conn.execute(select(func.sum(orders.c.total))).scalar_one()
        sql_items = conn.execute(select(func.sum(items.c.total))).scalar_one()
    assert (sql_totals, sql_items) == (want_totals, want_items)
    assert sum(row["total"] for row in rows(db.engine, "orders")) == want_totals
    assert sum(row["total"] for row in rows(db.engine, "order_line_items")) == want_items
    for event, row in zip(events, rows(db.engine, "orders"), strict=True):
        assert row["total"] == exact(event["data"]["total"])
        assert row["subtotal"] == exact(event["data"]["subtotal"])


def test_plain_sql_sums_of_money(db: Any) -> None:
    """What a BI tool sees when it sums money in plain SQL, without syncd's types.

    PostgreSQL and MariaDB keep NUMERIC(19, 4) and sum it exactly. SQLite has no
    decimal storage (a documented limitation of the embedded default): each row
    reads back exact through syncd's types, but SUM adds binary floats, so a sum
    is only within float rounding of the exact one."""
    events = money_orders() + [
        order_event(f"evt_p{n}", order_id=f"p{n}", total=total)
        for n, total in enumerate(["0.10", "0.10", "0.10", "0.20"])
    ]
    deliver(db.engine, *events)
    assert apply_all(db.engine).applied == len(events)
    want = sum(exact(e["data"]["total"]) for e in events)
    totals = [row["total"] for row in rows(db.engine, "orders")]
    assert all(isinstance(total, Decimal) for total in totals) and sum(totals) == want
    with db.engine.connect() as conn:
        everything = conn.execute(text("SELECT SUM(total) FROM orders")).scalar_one()
        small = conn.execute(text("SELECT SUM(total) FROM orders WHERE id LIKE 'p%'")).scalar_one()
    if db.kind != "sqlite":
        assert isinstance(everything, Decimal) and everything == want
        assert isinstance(small, Decimal) and small == D("0.50")
        return
    cents = [D("0.10")] * 3 + [D("0.20")]
    for got, exact_sum, addends in ((everything, want, totals), (small, D("0.50"), cents)):
        assert isinstance(got, float)
        # n additions, each off by at most half an ulp of what it adds up.
        bound = len(addends) * sum(abs(a) for a in addends) * D(2) ** -52
        assert abs(D(repr(got)) - exact_sum) <= bound, (got, exact_sum)
        assert D(repr(got)).quantize(D("0.0001")) == exact_sum


HUGE_AMOUNTS = ["999999999999999.9999", "100000000000000.0001", "1234567890123.4567"]


def test_amounts_read_back_exactly_or_fail_loudly(db: Any) -> None:
    """PostgreSQL and MariaDB hold NUMERIC(19, 4) exactly. SQLite keeps NUMERIC
    as a 64-bit float (15 significant digits): an amount with more digits
    fails its event with the reason instead of being rounded silently."""
    events = [
        order_event(f"evt_{n}", order_id=f"ord_{n}", total=amount, subtotal=f"-{amount}")
        for n, amount in enumerate(HUGE_AMOUNTS)
    ]
    deliver(db.engine, *events)
    if db.kind == "sqlite":
        apply_all(db.engine)
        assert rows(db.engine, "orders") == []
        failed = [row for row in rows(db.engine, "events") if row["status"] == "failed"]
        assert len(failed) == len(events)
        assert all("more than 15 digits" in row["last_error"] for row in failed)
        assert all(row["attempts"] == 1 for row in failed)
        # Fifteen digits are held exactly.
        db.reset()
        deliver(db.engine, order_event("evt_ok", order_id="ord_ok", total="99999999999.9999"))
        assert apply_all(db.engine).applied == 1
        assert rows(db.engine, "orders")[0]["total"] == D("99999999999.9999")
        return
    assert apply_all(db.engine).applied == len(events)
    for amount, row in zip(HUGE_AMOUNTS, rows(db.engine, "orders"), strict=True):
        assert (row["total"], row["subtotal"]) == (D(amount), -D(amount))


def test_timestamps_read_back_as_aware_utc_instants(db: Any) -> None:
    events = money_orders()
    deliver(db.engine, *events)
    apply_all(db.engine)
    for event, row in zip(events, rows(db.engine, "orders"), strict=True):
        spelled = event["data"]["updated_at"]
        instant = datetime.fromisoformat(spelled.replace("Z", "+00:00"))
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)  # naive means UTC
        for column in ("created_at", "updated_at"):
            assert row[column].utcoffset() == timedelta(0)
            assert row[column] == instant
            assert row[column].tzinfo is not None
    assert_all_times_utc(snapshot(db.engine))
    [first] = [row for row in rows(db.engine, "events") if row["id"] == "evt_000"]
    assert first["created_at"] == utc_at(0) and first["received_at"].utcoffset() == timedelta(0)
