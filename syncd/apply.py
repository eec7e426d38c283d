"""Apply events to the normalized tables (the rules of docs/apply-rules.md).

One handler per event type (``HANDLERS``) and an explicit list of types we
know and ignore on purpose (``IGNORED``); any other type is ignored too,
and logged. A batch of events is applied in one pass: parse, pick the newest
version of each order and customer in the batch, read the stored versions
in one query per table, write only the versions that are newer, with
multi-row statements.

Versions order by the resource's ``updated_at``, then when the copy is
known to be current (a Shoperti event's ``created_at``; a snapshot's read
time less a clock margin), then Shoperti's events before syncd's snapshots
(:class:`Version`, docs/apply-rules.md) — a total order, so applying any set
of events in any order gives the same rows. A tie that only the event ids
would decide is sent to reconcile, which fetches the current copy. Deletion
is sticky: once any event says an order or customer is deleted, ``deleted``
stays true.

This module makes no network calls and knows no dialect.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Integer, Table, and_, delete, select, update
from sqlalchemy.engine import Connection

from syncd import localtime
from syncd.db import dialect
from syncd.db.models import Customer as CustomerRow
from syncd.db.models import CustomerAddress as CustomerAddressRow
from syncd.db.models import Event as EventRow
from syncd.db.models import Order as OrderRow
from syncd.db.models import OrderAddress as OrderAddressRow
from syncd.db.models import OrderDiscountCode as DiscountCodeRow
from syncd.db.models import OrderFulfillment as FulfillmentRow
from syncd.db.models import OrderFulfillmentLineItem as FulfillmentLineRow
from syncd.db.models import OrderLineItem as LineItemRow
from syncd.db.models import OrderRefund as RefundRow
from syncd.db.models import OrderRefundLineItem as RefundLineRow
from syncd.db.models import OrderStatusHistory as HistoryRow
from syncd.db.models import OrderTransaction as TransactionRow
from syncd.db.models import RefreshRequest as RefreshRow
from syncd.errors import WireError
from syncd.shoperti import wire
from syncd.vocabulary import EventStatus

log = logging.getLogger("syncd.apply")

orders: Table = OrderRow.__table__  # type: ignore[assignment]
line_items: Table = LineItemRow.__table__  # type: ignore[assignment]
order_addresses: Table = OrderAddressRow.__table__  # type: ignore[assignment]
customers: Table = CustomerRow.__table__  # type: ignore[assignment]
customer_addresses: Table = CustomerAddressRow.__table__  # type: ignore[assignment]
history: Table = HistoryRow.__table__  # type: ignore[assignment]
events: Table = EventRow.__table__  # type: ignore[assignment]
refresh_requests: Table = RefreshRow.__table__  # type: ignore[assignment]
transactions: Table = TransactionRow.__table__  # type: ignore[assignment]
refunds: Table = RefundRow.__table__  # type: ignore[assignment]
refund_lines: Table = RefundLineRow.__table__  # type: ignore[assignment]
fulfillments: Table = FulfillmentRow.__table__  # type: ignore[assignment]
fulfillment_lines: Table = FulfillmentLineRow.__table__  # type: ignore[assignment]
discount_codes: Table = DiscountCodeRow.__table__  # type: ignore[assignment]

EPOCH = datetime(1, 1, 1, tzinfo=UTC)

# Event types we know and leave alone on purpose, with the reason.
IGNORED: dict[str, str] = {
    "product.created": "products are not normalized",
    "product.updated": "products are not normalized",
    "product.deleted": "products are not normalized",
    "checkout.created": "abandoned checkouts are not normalized",
    "checkout.updated": "abandoned checkouts are not normalized",
}

# How far our clock and the platform's may disagree, plus the whole second
# the platform's event times are truncated to. A snapshot read at R is known
# to hold every change made before R - SNAPSHOT_MARGIN on the platform's clock.
SNAPSHOT_MARGIN = timedelta(seconds=2)

OWN, NESTED = 1, 0
EVENT, SNAPSHOT = 1, 0


class Version(NamedTuple):
    """Where one copy of an order or customer stands in the version order
    (docs/apply-rules.md): tuples compare field by field, newest last.

    - ``updated_at``: the resource's own time of its last change.
    - ``as_of``: when the copy is known to be current: a Shoperti event's
      ``created_at``; for a snapshot, its read time minus SNAPSHOT_MARGIN.
    - ``kind``: at an equal ``as_of``, Shoperti's event (EVENT) is worth
      more than a copy syncd read (SNAPSHOT).
    - ``rank``: a customer's own event (OWN) is worth more than a copy of
      it nested in an order (NESTED), which may be the customer as it stood
      when the order last changed.
    - ``event_id``: only when all else is equal, so that the order is total
      and replay gives the same tables. Two versions that meet here, or
      whose order is otherwise a guess (:meth:`undecided`), with different
      content, are a tie nothing stored can decide: apply asks reconcile to
      fetch the current copy (``refresh_requests``).
    """

    updated_at: datetime
    as_of: datetime
    kind: int
    rank: int
    event_id: str

    @property
    def event_at(self) -> datetime | None:
        """The time of the event this version came from (None: unknown)."""
        if self.as_of == EPOCH:
            return None
        return self.as_of + SNAPSHOT_MARGIN if self.kind == SNAPSHOT else self.as_of

    def undecided(self, other: Version) -> bool:
        """Whether the order of this version and ``other``, both about the
        same resource with the same ``updated_at``, is only a guess: two of
        Shoperti's events of the same time, or an event and a snapshot read
        within SNAPSHOT_MARGIN of it. (A snapshot read well before or after
        the event, and two snapshots, are ordered for certain.)"""
        if self.rank != OWN or other.rank != OWN or self.updated_at != other.updated_at:
            return False
        if self.event_id == other.event_id or self.as_of == EPOCH or other.as_of == EPOCH:
            return False
        if self.kind == other.kind:
            return self.kind == EVENT and self.as_of == other.as_of
        snapshot, event = (self, other) if self.kind == SNAPSHOT else (other, self)
        return timedelta(0) <= event.as_of - snapshot.as_of < 2 * SNAPSHOT_MARGIN

    def refresh_after(self, other: Version) -> datetime:
        """When a copy read from the API is newer than both versions for certain."""
        times = [at for at in (self.event_at, other.event_at) if at is not None]
        return max(times) + SNAPSHOT_MARGIN + timedelta(seconds=1)


def version_of(
    updated_at: datetime | None,
    event_at: datetime | None,
    event_id: str,
    rank: int = OWN,
    *,
    snapshot: bool = False,
) -> Version:
    as_of = event_at or EPOCH
    if snapshot and event_at is not None:
        as_of = event_at - SNAPSHOT_MARGIN
    return Version(updated_at or EPOCH, as_of, SNAPSHOT if snapshot else EVENT, rank, event_id)


@dataclass
class Batch:
    """What a set of events asks of the tables, before it is compared with them."""

    store: str
    orders: dict[str, tuple[Version, wire.Order]] = field(default_factory=dict)
    customers: dict[str, tuple[Version, wire.Customer]] = field(default_factory=dict)
    deleted_orders: set[str] = field(default_factory=set)
    deleted_customers: set[str] = field(default_factory=set)
    history: list[dict[str, Any]] = field(default_factory=list)
    # Per resource, the ids whose newest version the events at hand cannot
    # decide (:meth:`Version.undecided`), with when a fresh copy would.
    ties: dict[str, dict[str, datetime]] = field(
        default_factory=lambda: {"order": {}, "customer": {}}
    )

    def offer_order(self, version: Version, order: wire.Order) -> None:
        self._offer(self.orders, "order", version, order)

    def offer_customer(self, version: Version, customer: wire.Customer) -> None:
        self._offer(self.customers, "customer", version, customer)

    def _offer(self, held: dict[str, Any], resource: str, version: Version, item: Any) -> None:
        before = held.get(item.id)
        if before is None or version > before[0]:
            held[item.id] = (version, item)
        if before is None:
            return
        if version.undecided(before[0]) and not wire.same_content(before[1], item):
            self.ties[resource][item.id] = version.refresh_after(before[0])


@dataclass(frozen=True)
class StoredEvent:
    """An event as the worker hands it over: its id, the payload to apply,
    and whether syncd made it from a copy read from the API."""

    id: str
    type: str
    payload: Mapping[str, Any]
    snapshot: bool = False


Handler = Callable[[Batch, wire.Event, bool], None]  # (batch, event, snapshot)


def _fits(table: Table, record: Any, where: str) -> None:
    """Refuse a value its column cannot hold, the same way on every database
    (SQLite would store it; PostgreSQL and MariaDB would refuse the batch)."""
    problem = _refusal(_limits(table), record)
    if problem is not None:
        raise WireError(f"{where}.{problem}")


def _refusal(
    limits: tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]], record: Any
) -> str | None:
    """Which of ``record``'s values its column cannot hold, and why; None if all fit."""
    lengths, bounds = limits
    for name, length in lengths:
        value = getattr(record, name, None)
        if value.__class__ is str and len(value) > length:
            return f"{name}: longer than {length} characters"
    for name, bound in bounds:
        value = getattr(record, name, None)
        if value.__class__ is int and not -bound <= value < bound:
            return f"{name}: out of range"
    return None


@functools.cache
def _limits(table: Table) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]:
    """The (column, maximum length) of the table's bounded text columns and the
    (column, bound) of its integer columns."""
    lengths, bounds = [], []
    for column in table.columns:
        length = getattr(column.type, "length", None)
        if length is not None:
            lengths.append((column.name, length))
        elif isinstance(column.type, Integer):
            bounds.append((column.name, 2**63 if isinstance(column.type, BigInteger) else 2**31))
    return tuple(lengths), tuple(bounds)


def _check_customer(customer: wire.Customer, where: str) -> None:
    _fits(customers, customer, where)
    for index, saved in enumerate(customer.addresses):
        _fits(customer_addresses, saved, f"{where}.addresses[{index}]")
        _fits(customer_addresses, saved.address, f"{where}.addresses[{index}]")


def _check_order(order: wire.Order, where: str) -> None:
    _fits(orders, order, where)
    for index, item in enumerate(order.line_items):
        _fits(line_items, item, f"{where}.line_items[{index}]")
    for kind, address in (("shipping", order.shipping_address), ("billing", order.billing_address)):
        if address is not None:
            _fits(order_addresses, address, f"{where}.{kind}_address")
    if order.customer is not None:
        _check_customer(order.customer, f"{where}.customer")
    _check_order_lists(order, where)


def _check_order_lists(order: wire.Order, where: str) -> None:
    _fits_each(transactions, order.transactions, f"{where}.transactions")
    _fits_each(refunds, order.refunds, f"{where}.refunds")
    for index, refund in enumerate(order.refunds):
        if refund.line_items:
            _fits_each(refund_lines, refund.line_items, f"{where}.refunds[{index}].line_items")
    _fits_each(fulfillments, order.fulfillments, f"{where}.fulfillments")
    for index, shipment in enumerate(order.fulfillments):
        _fits_each(
            fulfillment_lines, shipment.line_items, f"{where}.fulfillments[{index}].line_items"
        )
    _fits_each(discount_codes, order.discount_codes, f"{where}.discount_codes")


def _fits_each(table: Table, records: Sequence[Any], where: str) -> None:
    """:func:`_fits` for each record of a list, naming the entry only on a refusal."""
    limits = _limits(table)
    for index, record in enumerate(records):
        problem = _refusal(limits, record)
        if problem is not None:
            raise WireError(f"{where}[{index}].{problem}")


def _order_event(batch: Batch, event: wire.Event, snapshot: bool) -> None:
    gone = wire.bare_deletion(event)
    if gone is not None:  # nothing to show but the deletion
        batch.deleted_orders.add(gone)
        return
    is_delete = event.type == "order.deleted"
    order = wire.parse_order(wire.event_data(event), "data")
    _check_order(order, "data")
    version = version_of(order.updated_at, event.created_at, event.id, snapshot=snapshot)
    batch.offer_order(version, order)
    if is_delete or order.deleted:
        batch.deleted_orders.add(order.id)
    if order.customer is not None:
        nested = order.customer
        batch.offer_customer(
            # The copy nested in an order is the customer as of the order's
            # change (the event's time; in a snapshot, the order's updated_at,
            # less the margin as for any copy syncd read), not of the read.
            version_of(
                nested.updated_at or order.updated_at,
                order.updated_at if snapshot else event.created_at,
                event.id,
                NESTED,
                snapshot=snapshot,
            ),
            nested,
        )
    batch.history.append(
        {
            "store": batch.store,
            "event_id": event.id,
            "order_id": order.id,
            "event_type": event.type,
            "changed_at": order.updated_at or event.created_at,
            "status": order.status,
            "financial_status": order.financial_status,
            "fulfillment_status": order.fulfillment_status,
        }
    )


def _customer_event(batch: Batch, event: wire.Event, snapshot: bool) -> None:
    gone = wire.bare_deletion(event)
    if gone is not None:
        batch.deleted_customers.add(gone)
        return
    is_delete = event.type == "customer.deleted"
    customer = wire.parse_customer(wire.event_data(event), "data")
    _check_customer(customer, "data")
    batch.offer_customer(
        version_of(customer.updated_at, event.created_at, event.id, snapshot=snapshot), customer
    )
    if is_delete or customer.deleted:
        batch.deleted_customers.add(customer.id)


HANDLERS: dict[str, Handler] = {
    **{event_type: _order_event for event_type in wire.ORDER_EVENTS},
    **{event_type: _customer_event for event_type in wire.CUSTOMER_EVENTS},
}


RETRY: Final = "retry"
"""An outcome, not a status: a database error that a later attempt may not meet;
the event stays pending."""


@dataclass(frozen=True)
class Outcome:
    """What applying one event came to: a final status (applied, ignored,
    failed) or :data:`RETRY`; ``error`` says why when it is not applied."""

    status: Literal[EventStatus.APPLIED, EventStatus.IGNORED, EventStatus.FAILED, "retry"]
    error: str | None = None


def collect(store: str, events: Iterable[StoredEvent]) -> tuple[Batch, dict[str, Outcome]]:
    """Parse ``events`` into one Batch; an event that does not parse fails alone."""
    batch = Batch(store)
    outcomes: dict[str, Outcome] = {}
    for stored in events:
        handler = HANDLERS.get(stored.type)
        if handler is None:
            reason = IGNORED.get(stored.type)
            if reason is None:
                log.info("apply.unknown_type", extra={"event_type": stored.type, "store": store})
                reason = "event type not normalized"
            outcomes[stored.id] = Outcome(EventStatus.IGNORED, reason)
            continue
        try:
            event = wire.parse_event(stored.payload)
            handler(batch, event, stored.snapshot)
        except WireError as exc:
            outcomes[stored.id] = Outcome(EventStatus.FAILED, str(exc))
            continue
        outcomes[stored.id] = Outcome(EventStatus.APPLIED)
    return batch, outcomes


def write(
    conn: Connection, batch: Batch, now: datetime, timezone: str = localtime.DEFAULT_TIMEZONE
) -> None:
    """Write the versions of ``batch`` that are newer than the stored ones.

    The caller holds the store's apply lock for the transaction, so nothing
    else writes these rows between our read and our write. ``timezone`` is
    the store's, for the local time columns (see :mod:`syncd.localtime`).
    """
    _write_customers(conn, batch, now)
    _write_orders(conn, batch, now, localtime.zone(timezone))
    # A history row is keyed by its event, and an event is applied once
    # (a replay or a retry may meet its row again: those are skipped).
    dialect.insert_ignoring_duplicates(conn, history, batch.history, expect_new=True)
    _request_refresh(conn, batch, now)


def _request_refresh(conn: Connection, batch: Batch, now: datetime) -> None:
    """Ask reconcile for the current copy of each resource whose newest
    version a tie left undecided: a copy read after the tie's time plus the
    clock margin is newer than both events."""
    rows = [
        {
            "store": batch.store,
            "resource": resource,
            "resource_id": resource_id,
            "not_before": at,
            "requested_at": now,
        }
        for resource, ties in batch.ties.items()
        for resource_id, at in sorted(ties.items())
    ]
    if rows:
        log.info("apply.tie", extra={"store": batch.store, "count": len(rows)})
        dialect.upsert(conn, refresh_requests, rows, update=["not_before", "requested_at"])


class _Stored(NamedTuple):
    version: Version
    deleted: bool


def _stored_versions(
    conn: Connection, table: Table, store: str, ids: Sequence[str]
) -> dict[str, _Stored]:
    found: dict[str, _Stored] = {}
    # The event a row came from tells a nested copy (its type) and a
    # snapshot (read from the API) from Shoperti's own event about the resource.
    source = table.outerjoin(
        events, and_(events.c.store == table.c.store, events.c.id == table.c.last_event_id)
    )
    for ids_in in dialect.key_in(conn, table.c.id, ids):
        rows = conn.execute(
            select(
                table.c.id,
                table.c.updated_at,
                table.c.last_event_at,
                table.c.last_event_id,
                table.c.deleted,
                events.c.type,
                events.c.snapshot,
            )
            .select_from(source)
            .where(table.c.store == store, ids_in)
        )
        for row in rows:
            nested = table is customers and (row.type or "").startswith("order.")
            version = version_of(
                row.updated_at,
                row.last_event_at,
                row.last_event_id or "",
                NESTED if nested else OWN,
                snapshot=bool(row.snapshot),
            )
            found[row.id] = _Stored(version, bool(row.deleted))
    return found


def _stored_raw(conn: Connection, table: Table, store: str, ids: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ids_in in dialect.key_in(conn, table.c.id, ids):
        rows = conn.execute(select(table.c.id, table.c.raw).where(table.c.store == store, ids_in))
        found.update((row.id, row.raw) for row in rows)
    return found


def _same_as_stored(resource: str, item: Any, raw: Any) -> bool:
    if raw is None:
        return False
    try:
        parse = wire.parse_order if resource == "order" else wire.parse_customer
        return wire.same_content(parse(raw, resource), item)
    except WireError:
        return False


def _winners(
    conn: Connection,
    table: Table,
    batch: Batch,
    offered: Mapping[str, tuple[Version, Any]],
    deleted: set[str],
) -> tuple[list[tuple[Version, Any, bool]], set[str], set[str]]:
    """The offered versions newer than the stored ones (with their deleted
    flag), the ids that only need ``deleted`` set (a placeholder row where
    none is stored), and the ids, of all these, that have a stored row.
    An offered version whose order against the stored one is a guess
    (:meth:`Version.undecided`) and whose content differs is added to
    ``batch.ties``."""
    store = batch.store
    ids = sorted(set(offered) | deleted)
    stored = _stored_versions(conn, table, store, ids)
    winners = []
    tied: list[str] = []
    for resource_id, (version, item) in offered.items():
        held = stored.get(resource_id)
        if held is None or version > held.version:
            is_deleted = resource_id in deleted or (held is not None and held.deleted)
            winners.append((version, item, is_deleted))
        if held is not None and version.undecided(held.version):
            tied.append(resource_id)
    if tied:
        resource = "order" if table is orders else "customer"
        raw = _stored_raw(conn, table, store, tied)
        for resource_id in tied:
            version, item = offered[resource_id]
            if not _same_as_stored(resource, item, raw.get(resource_id)):
                batch.ties[resource][resource_id] = version.refresh_after(
                    stored[resource_id].version
                )
    winning = {item.id for _, item, _ in winners}
    flag_only = {
        resource_id
        for resource_id in deleted
        if resource_id not in winning and resource_id in stored and not stored[resource_id].deleted
    }
    missing = deleted - winning - set(stored)
    if missing:
        # A deletion for a resource never seen: keep a row saying so.
        flag_only |= missing
    return winners, flag_only, set(stored)


def _write_orders(conn: Connection, batch: Batch, now: datetime, tz: ZoneInfo) -> None:
    winners, flag_only, known = _winners(conn, orders, batch, batch.orders, batch.deleted_orders)
    store = batch.store
    rows = []
    children = OrderLists(store, tz)
    for version, order, is_deleted in winners:
        rows.append(_order_row(store, version, order, is_deleted, now, tz))
        children.add(order)
    replaced = sorted(row["id"] for row in rows if row["id"] in known)
    for table, listed in children.tables():
        _replace_children(conn, table, table.c.order_id, store, replaced, listed)
    _write_rows(conn, orders, rows, known)
    _flag_deleted(conn, orders, store, flag_only, known, now)


def _order_row(
    store: str, version: Version, order: wire.Order, is_deleted: bool, now: datetime, tz: ZoneInfo
) -> dict[str, Any]:
    created_local, created_day = localtime.local(order.created_at, tz)
    return {
        "store": store,
        "id": order.id,
        "number": order.number,
        "status": order.status,
        "financial_status": order.financial_status,
        "fulfillment_status": order.fulfillment_status,
        "currency": order.currency,
        "subtotal": order.subtotal,
        "total_discounts": order.total_discounts,
        "total_tax": order.total_tax,
        "total_shipping": order.total_shipping,
        "total": order.total,
        "customer_id": order.customer.id if order.customer else None,
        "email": order.email,
        "note": order.note,
        "tags": order.tags,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
        "cancelled_at": order.cancelled_at,
        "closed_at": order.closed_at,
        "created_at_local": created_local,
        "created_date_local": created_day,
        "deleted": is_deleted,
        "raw": dict(order.raw),
        "last_event_id": version.event_id,
        "last_event_at": version.event_at,
        "synced_at": now,
    }


class OrderLists:
    """The rows of an order's lists (line items, addresses, transactions,
    refunds and their lines, fulfillments and their lines, discount codes)
    for the winning versions of a batch; each list is replaced as a whole
    with its order. The wire parser has refused a list naming a key twice."""

    def __init__(self, store: str, tz: ZoneInfo) -> None:
        self.store, self.tz = store, tz
        self.line_items: list[dict[str, Any]] = []
        self.addresses: list[dict[str, Any]] = []
        self.transactions: list[dict[str, Any]] = []
        self.refunds: list[dict[str, Any]] = []
        self.refund_lines: list[dict[str, Any]] = []
        self.fulfillments: list[dict[str, Any]] = []
        self.fulfillment_lines: list[dict[str, Any]] = []
        self.discount_codes: list[dict[str, Any]] = []

    def add(self, order: wire.Order) -> None:
        key = {"store": self.store, "order_id": order.id}
        self._line_items(key, order.line_items)
        for kind, address in (
            ("shipping", order.shipping_address),
            ("billing", order.billing_address),
        ):
            if address is not None:
                self.addresses.append({**key, "kind": kind, **address.columns()})
        self._transactions(key, order.transactions)
        self._refunds(key, order.refunds)
        self._fulfillments(key, order.fulfillments)
        self.discount_codes.extend(
            {**key, "code": code.code, "type": code.type, "amount": code.amount}
            for code in order.discount_codes
        )

    def _line_items(self, key: dict[str, Any], listed: Sequence[wire.LineItem]) -> None:
        for position, item in enumerate(listed, start=1):
            self.line_items.append(
                {
                    **key,
                    "id": item.id,
                    "position": position,
                    "product_id": item.product_id,
                    "variant_id": item.variant_id,
                    "sku": item.sku,
                    "title": item.title,
                    "variant_title": item.variant_title,
                    "quantity": item.quantity,
                    "price": item.price,
                    "total_discount": item.total_discount,
                    "total": item.total,
                }
            )

    def _transactions(self, key: dict[str, Any], listed: Sequence[wire.Transaction]) -> None:
        for position, txn in enumerate(listed, start=1):
            self.transactions.append(
                {
                    **key,
                    "id": txn.id,
                    "position": position,
                    "kind": txn.kind,
                    "status": txn.status,
                    "gateway": txn.gateway,
                    "payment_method": txn.payment_method,
                    "amount": txn.amount,
                    "currency": txn.currency,
                    "authorization": txn.authorization,
                    "error_code": txn.error_code,
                    "created_at": txn.created_at,
                    "processed_at": txn.processed_at,
                }
            )

    def _refunds(self, key: dict[str, Any], listed: Sequence[wire.Refund]) -> None:
        for refund in listed:
            created_local, created_day = localtime.local(refund.created_at, self.tz)
            self.refunds.append(
                {
                    **key,
                    "id": refund.id,
                    "created_at": refund.created_at,
                    "created_at_local": created_local,
                    "created_date_local": created_day,
                    "note": refund.note,
                    "amount": refund.amount,
                    "restock": refund.restock,
                }
            )
            self.refund_lines.extend(
                {
                    **key,
                    "refund_id": refund.id,
                    "line_item_id": line.line_item_id,
                    "quantity": line.quantity,
                    "amount": line.amount,
                }
                for line in refund.line_items
            )

    def _fulfillments(self, key: dict[str, Any], listed: Sequence[wire.Fulfillment]) -> None:
        for shipment in listed:
            self.fulfillments.append(
                {
                    **key,
                    "id": shipment.id,
                    "status": shipment.status,
                    "tracking_company": shipment.tracking_company,
                    "tracking_number": shipment.tracking_number,
                    "tracking_url": shipment.tracking_url,
                    "created_at": shipment.created_at,
                    "updated_at": shipment.updated_at,
                }
            )
            self.fulfillment_lines.extend(
                {
                    **key,
                    "fulfillment_id": shipment.id,
                    "line_item_id": shipped.line_item_id,
                    "quantity": shipped.quantity,
                }
                for shipped in shipment.line_items
            )

    def tables(self) -> list[tuple[Table, list[dict[str, Any]]]]:
        return [
            (line_items, self.line_items),
            (order_addresses, self.addresses),
            (transactions, self.transactions),
            (refunds, self.refunds),
            (refund_lines, self.refund_lines),
            (fulfillments, self.fulfillments),
            (fulfillment_lines, self.fulfillment_lines),
            (discount_codes, self.discount_codes),
        ]


def _write_customers(conn: Connection, batch: Batch, now: datetime) -> None:
    winners, flag_only, known = _winners(
        conn, customers, batch, batch.customers, batch.deleted_customers
    )
    store = batch.store
    rows: list[dict[str, Any]] = []
    addresses: list[dict[str, Any]] = []
    for version, customer, is_deleted in winners:
        rows.append(_customer_row(store, version, customer, is_deleted, now))
        addresses.extend(
            {
                "store": store,
                "customer_id": customer.id,
                "id": saved.id,
                "position": position,
                "is_default": saved.is_default,
                **saved.address.columns(),
            }
            for position, saved in enumerate(customer.addresses, start=1)
        )
    # A customer's addresses may name one id twice (ids are optional on the
    # wire and default to the position): the last one is kept. Line items
    # cannot (the wire parser refuses that), nor order addresses (one per kind).
    addresses = _unique_by_key(customer_addresses, addresses)
    replaced = sorted(row["id"] for row in rows if row["id"] in known)
    _replace_children(
        conn, customer_addresses, customer_addresses.c.customer_id, store, replaced, addresses
    )
    _write_rows(conn, customers, rows, known)
    _flag_deleted(conn, customers, store, flag_only, known, now)


def _customer_row(
    store: str, version: Version, customer: wire.Customer, is_deleted: bool, now: datetime
) -> dict[str, Any]:
    return {
        "store": store,
        "id": customer.id,
        "email": customer.email,
        "first_name": customer.first_name,
        "last_name": customer.last_name,
        "phone": customer.phone,
        "accepts_marketing": customer.accepts_marketing,
        "orders_count": customer.orders_count,
        "total_spent": customer.total_spent,
        "tags": customer.tags,
        "created_at": customer.created_at,
        "updated_at": customer.updated_at,
        "deleted": is_deleted,
        "raw": dict(customer.raw),
        "last_event_id": version.event_id,
        "last_event_at": version.event_at,
        "synced_at": now,
    }


def _write_rows(
    conn: Connection, table: Table, rows: list[dict[str, Any]], known: set[str]
) -> None:
    """Upsert the winning rows: those with a stored row overwrite it; the
    others are new (the store's apply lock keeps it so until commit), and
    PostgreSQL takes those faster as a plain COPY."""
    if not rows:
        return
    update = [column for column in rows[0] if column not in ("store", "id")]
    dialect.upsert(conn, table, [row for row in rows if row["id"] in known], update=update)
    fresh = [row for row in rows if row["id"] not in known]
    dialect.upsert(conn, table, fresh, update=update, expect_new=True)


def _replace_children(
    conn: Connection,
    table: Table,
    parent: Any,
    store: str,
    parent_ids: list[str],
    rows: list[dict[str, Any]],
) -> None:
    """Delete the children of ``parent_ids`` (the parents that had a stored
    row: a new parent has no children yet) and insert ``rows``."""
    for parents_in in dialect.key_in(conn, parent, parent_ids):
        conn.execute(delete(table).where(table.c.store == store, parents_in))
    if rows:
        dialect.insert_rows(conn, table, rows)


def _unique_by_key(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    key = [column.name for column in table.primary_key.columns]
    return list({tuple(row[name] for name in key): row for row in rows}.values())


def _flag_deleted(
    conn: Connection, table: Table, store: str, ids: set[str], known: set[str], now: datetime
) -> None:
    """Set ``deleted`` on the stored rows of ``ids`` (``known``: the ids with a
    stored row, as read under the apply lock) and add a placeholder row for
    the others."""
    for ids_in in dialect.key_in(conn, table.c.id, sorted(ids & known)):
        conn.execute(
            update(table).where(table.c.store == store, ids_in).values(deleted=True, synced_at=now)
        )
    placeholders = [
        {
            "store": store,
            "id": resource_id,
            "deleted": True,
            "raw": {"id": resource_id},
            "synced_at": now,
        }
        for resource_id in sorted(ids - known)
    ]
    if placeholders:
        conn.execute(table.insert(), placeholders)
