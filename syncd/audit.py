"""``syncd audit``: prove that the tables equal the store, and repair them.

The API's orders and customers (updated since a date, or all) are listed page
by page and each page is compared with the stored rows:

- **missing**: listed by the API, absent from the tables;
- **stale**: the table's ``updated_at`` is older than the API's;
- **different**: the same ``updated_at`` (or a newer one the API does not
  have) with other content in a compared field (:data:`ORDER_FIELDS`,
  :data:`CUSTOMER_FIELDS`): damage or a bug;
- **unknown**: in the tables, not deleted, inside the window, and not
  listed by the API.

Rows changed after the audit started are left out (the API's list may
predate them). Read-only unless ``repair``: then the API's copies of the
missing, stale and different objects go through the inbox as snapshot
events (``source = 'audit'``) and the one apply path, as backfill's do; an
unknown object is asked for by id, and its copy applied the same way, or, if
the API answers 404, a deletion (``deleted = true``; rows are never removed).
Then the audit runs again, read-only, and that second result is the answer.

Memory: one page of objects at a time, plus the ids listed so far (to find
the unknown ones) — about 100 bytes an object.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Engine, Table, func, select
from sqlalchemy.engine import Connection

from syncd.apply import SNAPSHOT_MARGIN
from syncd.config import StoreConfig
from syncd.db import dialect
from syncd.db.models import Customer as CustomerRow
from syncd.db.models import Order as OrderRow
from syncd.db.models import OrderLineItem as LineItemRow
from syncd.db.models import OrderRefund as RefundRow
from syncd.errors import WireError
from syncd.inbox import utcnow
from syncd.resources import BY_NAME, SNAPSHOTTED, SnapshottedName
from syncd.shoperti import wire
from syncd.shoperti.client import ShopertiClient
from syncd.vocabulary import EventSource
from syncd.worker import add_and_apply

orders: Table = OrderRow.__table__  # type: ignore[assignment]
customers: Table = CustomerRow.__table__  # type: ignore[assignment]
line_items: Table = LineItemRow.__table__  # type: ignore[assignment]
refunds: Table = RefundRow.__table__  # type: ignore[assignment]

Kind = Literal["missing", "stale", "different", "unknown"]
KINDS: tuple[Kind, ...] = ("missing", "stale", "different", "unknown")
SHOWN = 10  # ids shown per kind
Resource = SnapshottedName

# What "the same content" means: a column and how to read it from the parsed copy.
ORDER_FIELDS: dict[str, Callable[[wire.Order], Any]] = {
    "status": lambda order: order.status,
    "financial_status": lambda order: order.financial_status,
    "fulfillment_status": lambda order: order.fulfillment_status,
    "total": lambda order: order.total,
    "line_items": lambda order: len(order.line_items),
    "refunded": lambda order: sum((r.amount or Decimal(0) for r in order.refunds), Decimal(0)),
    "deleted": lambda order: order.deleted,
}
CUSTOMER_FIELDS: dict[str, Callable[[wire.Customer], Any]] = {
    "email": lambda customer: customer.email,
    "orders_count": lambda customer: customer.orders_count,
    "total_spent": lambda customer: customer.total_spent,
    "deleted": lambda customer: customer.deleted,
}


@dataclass
class Findings:
    """What the audit found for one resource."""

    listed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    first: dict[str, list[str]] = field(default_factory=lambda: {kind: [] for kind in KINDS})

    def add(self, kind: Kind, resource_id: str) -> None:
        self.counts[kind] += 1
        if len(self.first[kind]) < SHOWN:
            self.first[kind].append(resource_id)

    @property
    def differing(self) -> int:
        return sum(self.counts.values())


@dataclass
class AuditReport:
    store: str
    since: str | None
    started_at: str
    findings: dict[str, Findings] = field(default_factory=dict)
    repaired: int = 0  # copies put through the inbox by --repair
    before_repair: AuditReport | None = None

    @property
    def clean(self) -> bool:
        return all(found.differing == 0 for found in self.findings.values())

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["clean"] = self.clean
        if self.before_repair is not None:
            document["before_repair"] = self.before_repair.to_json()
        return document


Progress = Callable[[str, int, int | None], None]


async def audit_store(
    engine: Engine,
    store: StoreConfig,
    client: ShopertiClient,
    *,
    since: datetime | None = None,
    repair: bool = False,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit ``store``; with ``repair``, repair it and audit it once more."""
    report = await _audit(engine, store, client, since, repair=repair, progress=progress)
    if not repair:
        return report
    again = await _audit(engine, store, client, since, repair=False, progress=progress)
    again.repaired = report.repaired
    again.before_repair = report
    return again


async def _audit(
    engine: Engine,
    store: StoreConfig,
    client: ShopertiClient,
    since: datetime | None,
    *,
    repair: bool,
    progress: Progress | None,
) -> AuditReport:
    started = utcnow()
    report = AuditReport(store.name, since.isoformat() if since else None, started.isoformat())
    # Only rows older than the audit (less the clock margin) can be judged.
    settled_before = started - SNAPSHOT_MARGIN
    for resource in SNAPSHOTTED:
        found = report.findings[resource] = Findings()
        listed: set[str] = set()
        async for page in client.pages(resource, since=since):
            read_at = page.read_at or utcnow()
            copies = _parse(resource, page.items)
            listed.update(resource_id for resource_id, _, _ in copies)
            wrong = await asyncio.to_thread(
                _compare_page, engine, store.name, resource, copies, settled_before, found
            )
            if repair and wrong:
                report.repaired += await asyncio.to_thread(
                    _repair, engine, store, resource, wrong, read_at
                )
            found.listed += len(page.items)
            if progress is not None:
                progress(f"audit {resource}", found.listed, page.total)
        unknown = await asyncio.to_thread(
            _unknown, engine, store.name, resource, listed, since, settled_before
        )
        for resource_id in unknown:
            found.add("unknown", resource_id)
        if repair and unknown:
            report.repaired += await _repair_unknown(engine, store, client, resource, unknown)
    return report


def _parse(resource: str, items: Sequence[Mapping[str, Any]]) -> list[tuple[str, Any, Any]]:
    """(id, parsed copy or None if unreadable, the item) of each listed object."""
    parse = wire.parse_order if resource == "orders" else wire.parse_customer
    parsed = []
    for item in items:
        resource_id = wire.ident(item.get("id"), "id")
        if resource_id is None:
            continue  # nothing to compare it with
        try:
            copy = parse(item, resource[:-1])
        except WireError:
            copy = None  # the tables cannot equal it: "different"
        parsed.append((resource_id, copy, item))
    return parsed


def _compare_page(
    engine: Engine,
    store: str,
    resource: Resource,
    copies: Sequence[tuple[str, Any, Any]],
    settled_before: datetime,
    found: Findings,
) -> list[Mapping[str, Any]]:
    """Classify each listed copy against its row; returns the items to repair."""
    table, fields = (orders, ORDER_FIELDS) if resource == "orders" else (customers, CUSTOMER_FIELDS)
    ids = [resource_id for resource_id, _, _ in copies]
    with dialect.reading(engine) as conn:
        stored = _stored(conn, table, store, ids, fields)
        conn.commit()
    wrong = []
    for resource_id, copy, item in copies:
        kind = _judge(stored.get(resource_id), copy, fields, settled_before)
        if kind is not None:
            found.add(kind, resource_id)
            wrong.append(item)
    return wrong


def _judge(
    row: Mapping[str, Any] | None,
    copy: Any,
    fields: Mapping[str, Callable[[Any], Any]],
    settled_before: datetime,
) -> Kind | None:
    if row is None or row["updated_at"] is None:
        # No row, or only the placeholder a deletion leaves: fine if the API says deleted.
        deleted_here = row is not None and row["deleted"]
        return None if copy is not None and copy.deleted and deleted_here else "missing"
    if copy is None:
        return "different"
    if copy.updated_at is not None and row["updated_at"] < copy.updated_at:
        return "stale"
    if copy.updated_at is not None and row["updated_at"] > copy.updated_at:
        # Newer than the API's copy: changed since the listing, or damage.
        return None if row["synced_at"] >= settled_before else "different"
    for name, read in fields.items():
        if _normal(row[name]) != _normal(read(copy)):
            return "different"
    return None


def _normal(value: Any) -> Any:
    # 116.00 and 116.0000 are the same amount.
    return value.normalize() if isinstance(value, Decimal) else value


def _stored(
    conn: Connection,
    table: Table,
    store: str,
    ids: Sequence[str],
    fields: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    columns = [name for name in fields if name in table.c]
    found: dict[str, dict[str, Any]] = {}
    for ids_in in dialect.key_in(conn, table.c.id, list(ids)):
        query = select(
            table.c.id,
            table.c.updated_at,
            table.c.synced_at,
            *(table.c[name] for name in columns if name not in ("deleted",)),
            table.c.deleted,
        ).where(table.c.store == store, ids_in)
        for row in conn.execute(query):
            found[row.id] = dict(row._mapping)
    if table is orders and found:
        _add_children(conn, store, found)
    return found


def _add_children(conn: Connection, store: str, found: dict[str, dict[str, Any]]) -> None:
    """Each stored order's number of line items and refunded amount."""
    for row in found.values():
        row["line_items"], row["refunded"] = 0, Decimal(0)
    for ids_in in dialect.key_in(conn, line_items.c.order_id, list(found)):
        counts = conn.execute(
            select(line_items.c.order_id, func.count())
            .where(line_items.c.store == store, ids_in)
            .group_by(line_items.c.order_id)
        )
        for order_id, count in counts:
            found[order_id]["line_items"] = int(count)
    for ids_in in dialect.key_in(conn, refunds.c.order_id, list(found)):
        # Summed here, not by the database: SQLite would sum floats.
        amounts = conn.execute(
            select(refunds.c.order_id, refunds.c.amount).where(refunds.c.store == store, ids_in)
        )
        for order_id, amount in amounts:
            found[order_id]["refunded"] += amount or Decimal(0)


def _unknown(
    engine: Engine,
    store: str,
    resource: Resource,
    listed: set[str],
    since: datetime | None,
    settled_before: datetime,
    chunk: int = 5000,
) -> list[str]:
    """Ids of the rows the API did not list: not deleted, inside the window,
    not changed since the audit started. Read in chunks of ids, in id order."""
    table = orders if resource == "orders" else customers
    unknown: list[str] = []
    after = ""
    with dialect.reading(engine) as conn:
        while True:
            query = (
                select(table.c.id)
                .where(
                    table.c.store == store,
                    table.c.deleted.is_(False),
                    table.c.id > after,
                    table.c.synced_at < settled_before,
                )
                .order_by(table.c.id)
                .limit(chunk)
            )
            if since is not None:
                query = query.where(table.c.updated_at >= since)
            ids = list(conn.scalars(query))
            if not ids:
                break
            unknown.extend(resource_id for resource_id in ids if resource_id not in listed)
            after = ids[-1]
        conn.commit()
    return unknown


def _repair(
    engine: Engine,
    store: StoreConfig,
    resource: Resource,
    items: Sequence[Mapping[str, Any]],
    read_at: datetime,
) -> int:
    single = resource[:-1]
    # distinct: the same copy may have been read (and lost to damage) before.
    snapshots = [wire.snapshot_event(single, item, read_at, distinct=True) for item in items]
    return len(add_and_apply(engine, store, snapshots, source=EventSource.AUDIT).new_ids)


async def _repair_unknown(
    engine: Engine,
    store: StoreConfig,
    client: ShopertiClient,
    resource: Resource,
    unknown: Sequence[str],
) -> int:
    """Ask the API for each unknown object: apply its copy, or its deletion on a 404."""
    single = BY_NAME[resource].snapshot
    assert single is not None
    total = 0
    for start in range(0, len(unknown), 100):
        chunk = unknown[start : start + 100]
        copies = await client.current_copies([(single, rid) for rid in chunk])
        gone_at = utcnow()
        events = [
            wire.snapshot_event(single, copy.data, copy.read_at, distinct=True)
            if copy is not None
            else _deletion(single, rid, gone_at)
            for rid, copy in zip(chunk, copies, strict=True)
        ]
        added = await asyncio.to_thread(
            add_and_apply, engine, store, events, source=EventSource.AUDIT
        )
        total += len(added.new_ids)
    return total


def _deletion(resource: str, resource_id: str, read_at: datetime) -> dict[str, Any]:
    """A deletion event for an object the API says it does not have."""
    digest = hashlib.sha256(f"{resource}\0{resource_id}\0gone\0{read_at.isoformat()}".encode())
    return {
        "id": f"snap_{digest.hexdigest()[:32]}",
        "object": "event",
        "type": f"{resource}.deleted",
        "created_at": read_at.isoformat(),
        "data": {"id": resource_id},
    }


def summary_lines(report: AuditReport) -> list[str]:
    """The human-readable result: a count per kind and the first ids of each."""
    lines = []
    if report.before_repair is not None:
        before = report.before_repair
        counts = ", ".join(f"{name} {found.differing}" for name, found in before.findings.items())
        lines.append(
            f"{report.store}: before repair: {counts} differing; "
            f"{report.repaired} copies applied through the inbox"
        )
    for name, found in report.findings.items():
        parts = ", ".join(f"{kind} {found.counts[kind]}" for kind in KINDS)
        lines.append(f"{report.store}: {name}: {found.listed} listed; {parts}")
        for kind in KINDS:
            if found.first[kind]:
                more = found.counts[kind] - len(found.first[kind])
                shown = ", ".join(found.first[kind]) + (f" and {more} more" if more else "")
                lines.append(f"{report.store}:   {kind} {name}: {shown}")
    verdict = "the tables equal the store" if report.clean else "the tables differ from the store"
    lines.append(f"{report.store}: {verdict}")
    return lines
