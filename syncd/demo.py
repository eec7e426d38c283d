"""``syncd demo``: the whole product end to end, on the embedded SQLite default.

Starts a simulated store and the daemon (receiver, worker) on a SQLite file,
sells a few hundred orders while about 10 % of the webhooks are lost for
good and some arrive twice or out of order, runs reconcile, and prints a
short table and whether the database equals the store's truth. Exit 0 only
if it does.

:func:`compare_with_truth` is also what the integration tests use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.table import Table as RichTable
from sqlalchemy import Engine, func, select

from syncd import localtime
from syncd.app import create_app
from syncd.config import Settings, load_settings
from syncd.db.engine import make_engine, upgrade
from syncd.db.models import (
    Customer,
    Event,
    Order,
    OrderDiscountCode,
    OrderFulfillment,
    OrderFulfillmentLineItem,
    OrderLineItem,
    OrderRefund,
    OrderRefundLineItem,
    OrderTransaction,
)
from syncd.errors import SyncdError
from syncd.reconcile import reconcile_store
from syncd.shoperti import wire
from syncd.vocabulary import EventSource, EventStatus

API_KEY = "sk_demo_not_a_secret"
TOKEN = "demo-token"  # noqa: S105 - the demo's own throwaway token


# The order lists compared with the truth: table, and the columns compared
# (all but store and order_id), as the wire parser's records name them.
LIST_COLUMNS: dict[Any, tuple[str, ...]] = {
    OrderTransaction: (
        "id",
        "position",
        "kind",
        "status",
        "gateway",
        "payment_method",
        "amount",
        "currency",
        "authorization",
        "error_code",
        "created_at",
        "processed_at",
    ),
    OrderRefund: (
        "id",
        "created_at",
        "created_at_local",
        "created_date_local",
        "note",
        "amount",
        "restock",
    ),
    OrderRefundLineItem: ("refund_id", "line_item_id", "quantity", "amount"),
    OrderFulfillment: (
        "id",
        "status",
        "tracking_company",
        "tracking_number",
        "tracking_url",
        "created_at",
        "updated_at",
    ),
    OrderFulfillmentLineItem: ("fulfillment_id", "line_item_id", "quantity"),
    OrderDiscountCode: ("code", "type", "amount"),
}


def _sorted(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(rows, key=lambda row: tuple(str(value) for value in row))


def expected_lists(order: wire.Order, zone: str) -> dict[Any, list[tuple[Any, ...]]]:
    """The rows each order-list table should hold for ``order``, as tuples of
    :data:`LIST_COLUMNS` (the refunds' local times in the store's ``zone``)."""
    tz = localtime.zone(zone)
    refunds = []
    for refund in order.refunds:
        wall, day = localtime.local(refund.created_at, tz)
        refunds.append(
            (refund.id, refund.created_at, wall, day, refund.note, refund.amount, refund.restock)
        )
    return {
        OrderTransaction: [
            (
                t.id,
                position,
                t.kind,
                t.status,
                t.gateway,
                t.payment_method,
                t.amount,
                t.currency,
                t.authorization,
                t.error_code,
                t.created_at,
                t.processed_at,
            )
            for position, t in enumerate(order.transactions, start=1)
        ],
        OrderRefund: _sorted(refunds),
        OrderRefundLineItem: _sorted(
            [
                (refund.id, line.line_item_id, line.quantity, line.amount)
                for refund in order.refunds
                for line in refund.line_items
            ]
        ),
        OrderFulfillment: _sorted(
            [
                (
                    f.id,
                    f.status,
                    f.tracking_company,
                    f.tracking_number,
                    f.tracking_url,
                    f.created_at,
                    f.updated_at,
                )
                for f in order.fulfillments
            ]
        ),
        OrderFulfillmentLineItem: _sorted(
            [
                (f.id, line.line_item_id, line.quantity)
                for f in order.fulfillments
                for line in f.line_items
            ]
        ),
        OrderDiscountCode: _sorted([(c.code, c.type, c.amount) for c in order.discount_codes]),
    }


def stored_lists(engine: Engine, store: str) -> dict[Any, dict[str, list[tuple[Any, ...]]]]:
    """Each order-list table's rows of ``store``, by order id, as in :func:`expected_lists`."""
    found: dict[Any, dict[str, list[tuple[Any, ...]]]] = {}
    with engine.connect() as conn:
        for model, names in LIST_COLUMNS.items():
            table = model.__table__
            by_order: dict[str, list[tuple[Any, ...]]] = {}
            query = select(table.c.order_id, *(table.c[name] for name in names)).where(
                table.c.store == store
            )
            for row in conn.execute(query):
                by_order.setdefault(row[0], []).append(tuple(row[1:]))
            found[model] = {
                # transactions in their order (position), the others as sets
                order_id: sorted(rows, key=lambda row: row[1])
                if model is OrderTransaction
                else _sorted(rows)
                for order_id, rows in by_order.items()
            }
    return found


def compare_with_truth(
    engine: Engine,
    store: str,
    orders: Mapping[str, Mapping[str, Any]],
    customers: Mapping[str, Mapping[str, Any]],
    timezone: str = localtime.DEFAULT_TIMEZONE,
) -> list[str]:
    """Differences between the normalized tables and the store's final state
    (empty when they agree). Compares every column that carries meaning, the
    order lists (transactions, refunds, fulfillments, discount codes and their
    lines) and the local times in the store's ``timezone``."""
    problems: list[str] = []
    with engine.connect() as conn:
        db_orders = {
            row.id: row for row in conn.execute(select(Order.__table__).where(Order.store == store))
        }
        items: dict[str, list[Any]] = {}
        for row in conn.execute(
            select(OrderLineItem.__table__)
            .where(OrderLineItem.store == store)
            .order_by(OrderLineItem.order_id, OrderLineItem.position)
        ):
            items.setdefault(row.order_id, []).append(row)
        db_customers = {
            row.id: row
            for row in conn.execute(select(Customer.__table__).where(Customer.store == store))
        }
    problems += _differences("order", Order.__table__, orders, db_orders, wire.parse_order)
    problems += _differences(
        "customer", Customer.__table__, customers, db_customers, wire.parse_customer
    )
    for order_id, data in orders.items():
        want = wire.parse_order(data)
        have = db_orders.get(order_id)
        if have is None:
            continue
        if (want.customer.id if want.customer else None) != have.customer_id:
            problems.append(f"order {order_id}: customer_id differs")
        got_items = [(i.id, i.quantity, i.price, i.total) for i in items.get(order_id, [])]
        want_items = [(i.id, i.quantity, i.price, i.total) for i in want.line_items]
        if got_items != want_items:
            problems.append(f"order {order_id}: line items differ")
        local = localtime.local(want.created_at, localtime.zone(timezone))
        if (have.created_at_local, have.created_date_local) != local:
            problems.append(f"order {order_id}: local creation time differs")
    problems += _list_differences(engine, store, orders, timezone)
    return problems


def _list_differences(
    engine: Engine, store: str, orders: Mapping[str, Mapping[str, Any]], timezone: str
) -> list[str]:
    problems = []
    stored = stored_lists(engine, store)
    for order_id, data in orders.items():
        for model, want in expected_lists(wire.parse_order(data), timezone).items():
            if stored[model].get(order_id, []) != want:
                problems.append(f"order {order_id}: {model.__tablename__} differ")
    for model, by_order in stored.items():
        extra = set(by_order) - set(orders)
        if extra:
            problems.append(f"{model.__tablename__}: rows for {len(extra)} unknown orders")
    return problems


def _differences(
    kind: str,
    table: Any,
    truth: Mapping[str, Mapping[str, Any]],
    stored: Mapping[str, Any],
    parse: Callable[[Any], Any],
) -> list[str]:
    """Every column that the parsed truth also has (all but id and raw JSON)."""
    problems = []
    for resource_id, data in truth.items():
        want = parse(data)
        have = stored.get(resource_id)
        if have is None:
            problems.append(f"{kind} {resource_id} missing")
            continue
        names = {field.name for field in dataclasses.fields(want)} - {"id", "raw"}
        for column in table.columns:
            if column.name in names and getattr(want, column.name) != getattr(have, column.name):
                problems.append(f"{kind} {resource_id}: {column.name} differs")
    extra = set(stored) - set(truth)
    if extra:
        problems.append(f"{len(extra)} {kind}s in the database that the store does not have")
    return problems


def pending_count(engine: Engine, store: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count()).where(
                    Event.store == store, Event.status == EventStatus.PENDING
                )
            )
            or 0
        )


async def wait_applied(engine: Engine, store: str) -> None:
    """Returns once no event of ``store`` is pending; callers bound it with a timeout."""
    while await asyncio.to_thread(pending_count, engine, store):  # noqa: ASYNC110 - polls the database
        await asyncio.sleep(0.1)


# Left in a --dir by the demo, so that a second run knows the database is its own.
MARKER = ".syncd-demo"


def run_demo(*, directory: Path | None, orders: int, seed: int) -> int:
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        note = _fresh_start(directory)
        try:
            return asyncio.run(_demo(directory, orders, seed, note=note))
        finally:
            _remove_lock_files(directory)
    with tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp:
        note = "in a temporary directory, removed at exit (keep it with --dir DIR)"
        return asyncio.run(_demo(Path(tmp), orders, seed, note=note))


def _fresh_start(directory: Path) -> str:
    """Every run starts from an empty database: the store it compares with is
    new each time. A previous demo's database in ``directory`` is removed; a
    database the demo did not make is never touched."""
    database = directory / "syncd.db"
    if database.exists():
        if not (directory / MARKER).is_file():
            raise SyncdError(
                f"{database} exists and was not made by `syncd demo`; "
                "give --dir a new or empty directory"
            )
        for leftover in (database, directory / "syncd.db-wal", directory / "syncd.db-shm"):
            leftover.unlink(missing_ok=True)
        _remove_lock_files(directory)
        note = "kept in DIR; the previous demo's database there was removed: starting empty"
    else:
        note = "kept in DIR"
    (directory / MARKER).write_text(
        "made by `syncd demo`: a new run with this --dir replaces syncd.db\n", encoding="utf-8"
    )
    return note.replace("DIR", str(directory))


def _remove_lock_files(directory: Path) -> None:
    # The reconcile lock's file beside the database (syncd.db.<hash>.lock).
    for lock in directory.glob("syncd.db.*.lock"):
        lock.unlink(missing_ok=True)


async def _demo(directory: Path, orders: int, seed: int, *, note: str) -> int:
    from syncd.simulator import Faults, SimulatedStore

    console = Console()
    started = time.monotonic()
    url = f"sqlite:///{directory / 'syncd.db'}"
    console.print(f"[bold]syncd demo[/]: database {directory / 'syncd.db'} ({note})")
    await asyncio.to_thread(upgrade, url)

    # proto stated explicitly, or asyncio does not set TCP_NODELAY on accepted sockets
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    faults = Faults(drop_rate=0.10, duplicate_rate=0.05, reorder_window=20)
    store = SimulatedStore(
        seed=seed,
        api_key=API_KEY,
        faults=faults,
        time_scale=1 / 3600,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shoperti?token={TOKEN}",
    )
    await store.start()
    settings: Settings = load_settings(
        {
            "SYNCD_DATABASE_URL": url,
            "SYNCD_API_URL": store.api_url,
            "SYNCD_API_KEY": API_KEY,
            "SYNCD_WEBHOOK_SECRET": TOKEN,
            "SYNCD_RECONCILE_INTERVAL": "0",
        }
    )
    engine = make_engine(url)
    app = create_app(settings, engine, run_scheduler=False)
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, log_level="warning")
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if serving.done():
                serving.result()
            await asyncio.sleep(0.02)
        daemon = app.state.daemon
        config = settings.store()
        client = daemon.clients[config.name]
        # First run on an empty database: there is no cursor yet, so it syncs
        # the (still empty) store's resources and sets the cursor.
        await reconcile_store(engine, settings, config, client, step=daemon.apply_step)

        console.print(f"selling {orders} orders; webhooks: 10 % lost, 5 % duplicated, reordered…")
        await store.sell(orders=orders)
        await store.wait_deliveries(timeout=120)
        async with asyncio.timeout(60):
            await wait_applied(engine, config.name)
        lost = set(store.lost_event_ids)
        report = await reconcile_store(
            engine, settings, config, client, apply_now=True, step=daemon.apply_step
        )
        async with asyncio.timeout(60):
            await wait_applied(engine, config.name)
        truth = store.truth()
        problems = await asyncio.to_thread(
            compare_with_truth,
            engine,
            config.name,
            truth.orders,
            truth.customers,
            config.timezone,
        )
        counts = await asyncio.to_thread(_counts, engine, config.name)
    finally:
        server.should_exit = True
        await serving
        await store.stop()
        engine.dispose()

    stats = store.delivery_stats
    table = RichTable(title="syncd demo", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row(
        "orders in the store / in the database", f"{len(truth.orders)} / {counts['orders']}"
    )
    table.add_row("line items in the database", str(counts["line_items"]))
    table.add_row(
        "payments: paid / declined / OXXO vouchers expired",
        f"{counts['paid']} / {counts['declined']} / {counts['expired']}",
    )
    table.add_row("refunds (refunded MXN)", f"{counts['refunds']} ({counts['refunded']:,.2f})")
    table.add_row(
        "fulfillments (orders shipped in two)",
        f"{counts['fulfillments']} ({counts['split']})",
    )
    table.add_row(
        "customers in the store / in the database",
        f"{len(truth.customers)} / {counts['customers']}",
    )
    table.add_row("events emitted by the store", str(len(store.events)))
    table.add_row("events received by webhook", str(counts["webhook"]))
    table.add_row("duplicate deliveries (stored once)", str(stats.duplicated))
    table.add_row("webhooks lost for good", str(len(lost)))
    table.add_row("recovered by reconcile", str(report.found))
    table.add_row("events applied / ignored", f"{counts['applied']} / {counts['ignored']}")
    console.print(table)
    elapsed = time.monotonic() - started
    missing = lost - counts["reconcile_ids"]
    if problems or missing or report.error:
        console.print(f"[bold red]MISMATCH[/] after {elapsed:.1f} s:")
        for line in problems[:20]:
            console.print(f"  {line}")
        if missing:
            console.print(f"  {len(missing)} lost webhooks were not recovered by reconcile")
        if report.error:
            console.print(f"  reconcile failed: {report.error}")
        return 1
    console.print(
        f"[bold green]OK[/]: the database equals the store's truth — every order, "
        f"payment, refund, fulfillment and discount code arrived ({elapsed:.1f} s)."
    )
    return 0


def _counts(engine: Engine, store: str) -> dict[str, Any]:
    with engine.connect() as conn:

        def count(table: Any, *where: Any) -> int:
            return int(conn.scalar(select(func.count()).select_from(table).where(*where)) or 0)

        txn = OrderTransaction.__table__
        sales = (txn.c.store == store, txn.c.kind == "sale")
        refunds = OrderRefund.__table__
        shipments = OrderFulfillment.__table__
        per_order = (
            select(shipments.c.order_id)
            .where(shipments.c.store == store)
            .group_by(shipments.c.order_id)
            .having(func.count() > 1)
            .subquery()
        )
        return {
            "paid": count(txn, *sales, txn.c.status == "success"),
            "declined": count(txn, *sales, txn.c.status == "failure"),
            "expired": count(txn, *sales, txn.c.status == "expired"),
            "refunds": count(refunds, refunds.c.store == store),
            "refunded": conn.scalar(
                select(func.coalesce(func.sum(refunds.c.amount), 0)).where(refunds.c.store == store)
            )
            or 0,
            "fulfillments": count(shipments, shipments.c.store == store),
            "split": count(per_order),
            "orders": count(Order.__table__, Order.store == store),
            "line_items": count(OrderLineItem.__table__, OrderLineItem.store == store),
            "customers": count(Customer.__table__, Customer.store == store),
            "webhook": count(
                Event.__table__, Event.store == store, Event.source == EventSource.WEBHOOK
            ),
            "applied": count(
                Event.__table__, Event.store == store, Event.status == EventStatus.APPLIED
            ),
            "ignored": count(
                Event.__table__, Event.store == store, Event.status == EventStatus.IGNORED
            ),
            "reconcile_ids": set(
                conn.scalars(
                    select(Event.id).where(
                        Event.store == store, Event.source == EventSource.RECONCILE
                    )
                )
            ),
        }
