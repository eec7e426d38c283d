"""The tables: the contract with BI users (docs/data-dictionary.md).

Every table and column carries a comment; BI tools show it, and
``docs/data-dictionary.md`` is generated from it (``syncd db dictionary``).
Names here are a public interface: add freely, rename nothing without a
migration path. Every key starts with ``store``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from syncd.db.dialect import Money, UTCDateTime, ident_type, json_type, local_datetime_type
from syncd.vocabulary import EventSource, EventStatus, check_in

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STORE = 64  # store names
ID = 128  # Shoperti ids (collision-resistant strings, or numbers as text)
NAME = 255


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        Decimal: Money(),
        dict[str, Any]: json_type(),
    }


def _store() -> Mapped[str]:
    return mapped_column(
        ident_type(STORE),
        primary_key=True,
        comment="Name of the configured store this row belongs to.",
    )


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # The worker claims pending events oldest first: this index hands them
        # over in that order, without sorting the whole backlog for each batch.
        Index("ix_events_queue", "store", "status", "received_at"),
        Index("ix_events_resource", "store", "resource", "resource_id"),
        Index("ix_events_created_at", "store", "created_at"),
        CheckConstraint(check_in("status", EventStatus), name="status"),
        CheckConstraint(check_in("source", EventSource), name="source"),
        {
            "comment": "Every event received from Shoperti (webhook, reconcile or backfill), kept "
            "as received; the inbox the normalized tables are built from."
        },
    )

    store: Mapped[str] = _store()
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Shoperti event id.")
    type: Mapped[str] = mapped_column(
        String(64), comment="Event type, e.g. order.paid or customer.updated."
    )
    resource: Mapped[str] = mapped_column(
        String(32), comment="Kind of object the event is about: order, customer, or other."
    )
    resource_id: Mapped[str | None] = mapped_column(
        ident_type(ID), comment="Id of the order or customer the event is about (NULL if unknown)."
    )
    created_at: Mapped[datetime | None] = mapped_column(
        comment="When Shoperti created the event (UTC)."
    )
    received_at: Mapped[datetime] = mapped_column(
        comment="When syncd first stored the event (UTC)."
    )
    source: Mapped[str] = mapped_column(
        String(16),
        comment="How the event reached syncd: webhook, reconcile, backfill or audit "
        "(syncd audit --repair).",
    )
    status: Mapped[str] = mapped_column(
        String(16),
        comment="pending (not applied yet), applied, ignored (type not normalized), "
        "rejected (failed verification, never applied) or failed (gave up after retries).",
    )
    verified: Mapped[bool] = mapped_column(
        Boolean, comment="True when the payload is the copy fetched from the Shoperti API."
    )
    snapshot: Mapped[bool] = mapped_column(
        Boolean,
        server_default=false(),
        comment="True when syncd made the event from a copy of the order or customer read "
        "from the API (backfill, resource sync, refresh, audit); its created_at is when it was "
        "read. "
        "False for Shoperti's own events.",
    )
    attempts: Mapped[int] = mapped_column(
        Integer, comment="How many times syncd tried to verify and apply the event."
    )
    last_error: Mapped[str | None] = mapped_column(
        Text, comment="Why the last attempt failed or the event was rejected (no customer data)."
    )
    next_attempt_at: Mapped[datetime | None] = mapped_column(
        comment="Earliest time of the next attempt for a pending event (retry backoff)."
    )
    payload: Mapped[dict[str, Any]] = mapped_column(
        comment="The event JSON: the API's copy once verified, else the body as posted."
    )
    processed_at: Mapped[datetime | None] = mapped_column(
        comment="When the event was applied, ignored, rejected or given up (UTC)."
    )


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_updated_at", "store", "updated_at"),
        Index("ix_orders_created_at", "store", "created_at"),
        Index("ix_orders_customer", "store", "customer_id"),
        Index("ix_orders_created_date_local", "store", "created_date_local"),
        {"comment": "One row per order, as of its newest version received."},
    )

    store: Mapped[str] = _store()
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Shoperti order id.")
    number: Mapped[int | None] = mapped_column(
        BigInteger, comment="Order number shown to the merchant and the buyer."
    )
    status: Mapped[str | None] = mapped_column(String(32), comment="Order status, e.g. open.")
    financial_status: Mapped[str | None] = mapped_column(
        String(32), comment="Payment status, e.g. pending, paid, refunded."
    )
    fulfillment_status: Mapped[str | None] = mapped_column(
        String(32), comment="Shipping status, e.g. unfulfilled, fulfilled."
    )
    currency: Mapped[str | None] = mapped_column(String(3), comment="ISO 4217 currency code.")
    subtotal: Mapped[Decimal | None] = mapped_column(
        comment="Sum of the line items' totals, in the order's currency."
    )
    total_discounts: Mapped[Decimal | None] = mapped_column(comment="Order-level discounts.")
    total_tax: Mapped[Decimal | None] = mapped_column(comment="Taxes charged.")
    total_shipping: Mapped[Decimal | None] = mapped_column(comment="Shipping charged.")
    total: Mapped[Decimal | None] = mapped_column(comment="Amount the buyer pays.")
    customer_id: Mapped[str | None] = mapped_column(
        ident_type(ID), comment="Customer id (customers.id); NULL for a guest checkout."
    )
    email: Mapped[str | None] = mapped_column(String(320), comment="Buyer's e-mail address.")
    note: Mapped[str | None] = mapped_column(Text, comment="Note on the order.")
    tags: Mapped[str | None] = mapped_column(Text, comment="Tags, comma-separated.")
    created_at: Mapped[datetime | None] = mapped_column(comment="When the order was placed (UTC).")
    updated_at: Mapped[datetime | None] = mapped_column(
        comment="When the order last changed at Shoperti (UTC)."
    )
    cancelled_at: Mapped[datetime | None] = mapped_column(comment="When cancelled (UTC), or NULL.")
    closed_at: Mapped[datetime | None] = mapped_column(comment="When closed (UTC), or NULL.")
    created_at_local: Mapped[datetime | None] = mapped_column(
        local_datetime_type(),
        comment="created_at as the wall-clock time in the store's time zone (no zone stored).",
    )
    created_date_local: Mapped[date | None] = mapped_column(
        Date, comment="The day the order was placed, in the store's time zone: group by this."
    )
    deleted: Mapped[bool] = mapped_column(
        Boolean, comment="True once the order was deleted at Shoperti; rows are never removed."
    )
    raw: Mapped[dict[str, Any]] = mapped_column(
        comment="The order JSON as received, with every field, including ones not in columns."
    )
    last_event_id: Mapped[str | None] = mapped_column(
        ident_type(ID), comment="Id of the event whose version of the order this row holds."
    )
    last_event_at: Mapped[datetime | None] = mapped_column(
        comment="created_at of that event (UTC); orders versions by updated_at, then this."
    )
    synced_at: Mapped[datetime] = mapped_column(comment="When syncd last wrote this row (UTC).")


class OrderLineItem(Base):
    __tablename__ = "order_line_items"
    __table_args__ = (
        Index("ix_order_line_items_sku", "store", "sku"),
        {"comment": "Line items of each order's current version."},
    )

    store: Mapped[str] = _store()
    order_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Order id (orders.id)."
    )
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Line item id.")
    position: Mapped[int] = mapped_column(Integer, comment="Place in the order, from 1.")
    product_id: Mapped[str | None] = mapped_column(ident_type(ID), comment="Product id.")
    variant_id: Mapped[str | None] = mapped_column(ident_type(ID), comment="Product variant id.")
    sku: Mapped[str | None] = mapped_column(String(NAME), comment="Stock keeping unit.")
    title: Mapped[str | None] = mapped_column(Text, comment="Product title.")
    variant_title: Mapped[str | None] = mapped_column(Text, comment="Variant title, e.g. size.")
    quantity: Mapped[int | None] = mapped_column(Integer, comment="Units ordered.")
    price: Mapped[Decimal | None] = mapped_column(comment="Unit price.")
    total_discount: Mapped[Decimal | None] = mapped_column(comment="Discount on this line.")
    total: Mapped[Decimal | None] = mapped_column(comment="Line total after discount.")


class _Address:
    first_name: Mapped[str | None] = mapped_column(String(NAME), comment="First name.")
    last_name: Mapped[str | None] = mapped_column(String(NAME), comment="Last name.")
    company: Mapped[str | None] = mapped_column(String(NAME), comment="Company.")
    address1: Mapped[str | None] = mapped_column(Text, comment="Street and number.")
    address2: Mapped[str | None] = mapped_column(Text, comment="Apartment, suite, neighbourhood.")
    city: Mapped[str | None] = mapped_column(String(NAME), comment="City.")
    province: Mapped[str | None] = mapped_column(String(NAME), comment="State or province.")
    zip: Mapped[str | None] = mapped_column(String(32), comment="Postal code.")
    country_code: Mapped[str | None] = mapped_column(
        String(8), comment="ISO 3166-1 alpha-2 country code."
    )
    phone: Mapped[str | None] = mapped_column(String(64), comment="Phone number.")


class OrderAddress(_Address, Base):
    __tablename__ = "order_addresses"
    __table_args__ = {"comment": "Shipping and billing address of each order's current version."}

    store: Mapped[str] = _store()
    order_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Order id (orders.id)."
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True, comment="shipping or billing.")


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_updated_at", "store", "updated_at"),
        Index("ix_customers_email", "store", "email"),
        {"comment": "One row per customer, as of the newest version received."},
    )

    store: Mapped[str] = _store()
    id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Shoperti customer id."
    )
    email: Mapped[str | None] = mapped_column(String(320), comment="E-mail address.")
    first_name: Mapped[str | None] = mapped_column(String(NAME), comment="First name.")
    last_name: Mapped[str | None] = mapped_column(String(NAME), comment="Last name.")
    phone: Mapped[str | None] = mapped_column(String(64), comment="Phone number.")
    accepts_marketing: Mapped[bool | None] = mapped_column(
        Boolean, comment="Whether the customer accepts marketing e-mail."
    )
    orders_count: Mapped[int | None] = mapped_column(
        Integer, comment="Number of orders, as counted by Shoperti."
    )
    total_spent: Mapped[Decimal | None] = mapped_column(
        comment="Total spent, as computed by Shoperti."
    )
    tags: Mapped[str | None] = mapped_column(Text, comment="Tags, comma-separated.")
    created_at: Mapped[datetime | None] = mapped_column(
        comment="When the customer signed up (UTC)."
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        comment="When the customer last changed at Shoperti (UTC)."
    )
    deleted: Mapped[bool] = mapped_column(
        Boolean, comment="True once the customer was deleted at Shoperti; rows are never removed."
    )
    raw: Mapped[dict[str, Any]] = mapped_column(comment="The customer JSON as received.")
    last_event_id: Mapped[str | None] = mapped_column(
        ident_type(ID), comment="Id of the event whose version of the customer this row holds."
    )
    last_event_at: Mapped[datetime | None] = mapped_column(
        comment="created_at of that event (UTC); versions order by updated_at, then this."
    )
    synced_at: Mapped[datetime] = mapped_column(comment="When syncd last wrote this row (UTC).")


class CustomerAddress(_Address, Base):
    __tablename__ = "customer_addresses"
    __table_args__ = {"comment": "Saved addresses of each customer's current version."}

    store: Mapped[str] = _store()
    customer_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Customer id (customers.id)."
    )
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Address id.")
    position: Mapped[int] = mapped_column(Integer, comment="Place in the customer's list, from 1.")
    is_default: Mapped[bool] = mapped_column(
        Boolean, comment="True for the customer's default address."
    )


class OrderStatusHistory(Base):
    __tablename__ = "order_status_history"
    __table_args__ = (
        Index("ix_order_status_history_order", "store", "order_id", "changed_at"),
        {
            "comment": "One row per order event: the order's statuses as that event saw them. "
            "Older events add their row even when they do not change the order."
        },
    )

    store: Mapped[str] = _store()
    event_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Event id (events.id)."
    )
    order_id: Mapped[str] = mapped_column(ident_type(ID), comment="Order id (orders.id).")
    event_type: Mapped[str] = mapped_column(String(64), comment="Event type, e.g. order.paid.")
    changed_at: Mapped[datetime | None] = mapped_column(
        comment="When the change happened (UTC): the order's updated_at, else the event's time."
    )
    status: Mapped[str | None] = mapped_column(String(32), comment="Order status then.")
    financial_status: Mapped[str | None] = mapped_column(String(32), comment="Payment status then.")
    fulfillment_status: Mapped[str | None] = mapped_column(
        String(32), comment="Shipping status then."
    )


def _order_id() -> Mapped[str]:
    return mapped_column(ident_type(ID), primary_key=True, comment="Order id (orders.id).")


class OrderTransaction(Base):
    __tablename__ = "order_transactions"
    __table_args__ = (
        Index("ix_order_transactions_status", "store", "status", "kind"),
        {
            "comment": "Money movements of each order's current version, as the payment "
            "gateway reported them: payments, their failures, refunds and voids."
        },
    )

    store: Mapped[str] = _store()
    order_id: Mapped[str] = _order_id()
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Transaction id.")
    position: Mapped[int] = mapped_column(Integer, comment="Place in the order's list, from 1.")
    kind: Mapped[str | None] = mapped_column(
        String(32), comment="authorization, capture, sale, refund or void."
    )
    status: Mapped[str | None] = mapped_column(
        String(32),
        comment="pending, success, failure, error or expired (a cash voucher never paid).",
    )
    gateway: Mapped[str | None] = mapped_column(
        String(NAME), comment="Payment gateway, e.g. conekta, mercadopago, paypal, oxxo."
    )
    payment_method: Mapped[str | None] = mapped_column(
        String(NAME), comment="How the buyer paid, e.g. card, oxxo, spei, paypal, cash."
    )
    amount: Mapped[Decimal | None] = mapped_column(
        comment="Amount moved (positive), in this transaction's currency."
    )
    currency: Mapped[str | None] = mapped_column(String(3), comment="ISO 4217 currency code.")
    authorization: Mapped[str | None] = mapped_column(
        String(NAME), comment="The gateway's reference for the transaction, or NULL."
    )
    error_code: Mapped[str | None] = mapped_column(
        String(NAME), comment="The gateway's error for a failed transaction, or NULL."
    )
    created_at: Mapped[datetime | None] = mapped_column(
        comment="When the transaction was started (UTC)."
    )
    processed_at: Mapped[datetime | None] = mapped_column(
        comment="When the gateway settled it (UTC); NULL while pending."
    )


class OrderRefund(Base):
    __tablename__ = "order_refunds"
    __table_args__ = (
        Index("ix_order_refunds_created_date_local", "store", "created_date_local"),
        {"comment": "Refunds of each order's current version: money returned to the buyer."},
    )

    store: Mapped[str] = _store()
    order_id: Mapped[str] = _order_id()
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Refund id.")
    created_at: Mapped[datetime | None] = mapped_column(
        comment="When the money was returned (UTC): the time reports use."
    )
    created_at_local: Mapped[datetime | None] = mapped_column(
        local_datetime_type(),
        comment="created_at as the wall-clock time in the store's time zone (no zone stored).",
    )
    created_date_local: Mapped[date | None] = mapped_column(
        Date, comment="The day of the refund in the store's time zone: group by this."
    )
    note: Mapped[str | None] = mapped_column(Text, comment="Note on the refund.")
    amount: Mapped[Decimal | None] = mapped_column(
        comment="Everything returned to the buyer, shipping and tax included."
    )
    restock: Mapped[bool | None] = mapped_column(
        Boolean, comment="True when the refunded units went back to stock."
    )


class OrderRefundLineItem(Base):
    __tablename__ = "order_refund_line_items"
    __table_args__ = {"comment": "Line items of each refund (none for an amount-only refund)."}

    store: Mapped[str] = _store()
    order_id: Mapped[str] = _order_id()
    refund_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Refund id (order_refunds.id)."
    )
    line_item_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Line item refunded (order_line_items.id)."
    )
    quantity: Mapped[int | None] = mapped_column(Integer, comment="Units refunded.")
    amount: Mapped[Decimal | None] = mapped_column(comment="Amount refunded for this line.")


class OrderFulfillment(Base):
    __tablename__ = "order_fulfillments"
    __table_args__ = (
        Index("ix_order_fulfillments_created_at", "store", "created_at"),
        {"comment": "Shipments of each order's current version, with their tracking."},
    )

    store: Mapped[str] = _store()
    order_id: Mapped[str] = _order_id()
    id: Mapped[str] = mapped_column(ident_type(ID), primary_key=True, comment="Fulfillment id.")
    status: Mapped[str | None] = mapped_column(
        String(32), comment="pending, open, success, cancelled or failure."
    )
    tracking_company: Mapped[str | None] = mapped_column(
        String(NAME), comment="Carrier, e.g. Estafeta."
    )
    tracking_number: Mapped[str | None] = mapped_column(
        String(NAME), comment="The carrier's tracking number."
    )
    tracking_url: Mapped[str | None] = mapped_column(Text, comment="Where to track the shipment.")
    created_at: Mapped[datetime | None] = mapped_column(
        comment="When the shipment was created (UTC)."
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        comment="When the shipment last changed (UTC)."
    )


class OrderFulfillmentLineItem(Base):
    __tablename__ = "order_fulfillment_line_items"
    __table_args__ = {"comment": "Units of each line item in each shipment."}

    store: Mapped[str] = _store()
    order_id: Mapped[str] = _order_id()
    fulfillment_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Fulfillment id (order_fulfillments.id)."
    )
    line_item_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Line item shipped (order_line_items.id)."
    )
    quantity: Mapped[int | None] = mapped_column(Integer, comment="Units shipped.")


class OrderDiscountCode(Base):
    __tablename__ = "order_discount_codes"
    __table_args__ = (
        Index("ix_order_discount_codes_code", "store", "code"),
        {"comment": "Discount codes of each order's current version."},
    )

    store: Mapped[str] = _store()
    order_id: Mapped[str] = _order_id()
    code: Mapped[str] = mapped_column(
        ident_type(NAME), primary_key=True, comment="The code the buyer entered, e.g. BUENFIN."
    )
    type: Mapped[str | None] = mapped_column(
        String(32), comment="percentage, fixed_amount or shipping."
    )
    amount: Mapped[Decimal | None] = mapped_column(
        comment="What this code took off the order (part of orders.total_discounts)."
    )


class SyncState(Base):
    __tablename__ = "sync_state"
    __table_args__ = {"comment": "Reconcile cursors, backfill checkpoints and last-run facts."}

    store: Mapped[str] = _store()
    name: Mapped[str] = mapped_column(
        String(64), primary_key=True, comment="What the row records, e.g. events_cursor."
    )
    value: Mapped[dict[str, Any]] = mapped_column(comment="The recorded facts, as JSON.")
    updated_at: Mapped[datetime] = mapped_column(comment="When the row was last written (UTC).")


class RefreshRequest(Base):
    __tablename__ = "refresh_requests"
    __table_args__ = {
        "comment": "Orders and customers whose newest version the stored events cannot tell "
        "(two events with the same whole-second times and different content): reconcile "
        "fetches the API's current copy of each and removes the row."
    }

    store: Mapped[str] = _store()
    resource: Mapped[str] = mapped_column(
        String(16), primary_key=True, comment="order or customer."
    )
    resource_id: Mapped[str] = mapped_column(
        ident_type(ID), primary_key=True, comment="Id of the order or customer."
    )
    not_before: Mapped[datetime] = mapped_column(
        comment="Earliest time a copy read from the API is known to be newer than both "
        "events (UTC): their time plus the clock margin."
    )
    requested_at: Mapped[datetime] = mapped_column(comment="When apply found the tie (UTC).")


metadata = Base.metadata

#: The tables apply writes from events (the store's data, as BI reads it),
#: each child before its parent: the order to delete them in.
NORMALIZED = (
    "order_transactions",
    "order_refund_line_items",
    "order_refunds",
    "order_fulfillment_line_items",
    "order_fulfillments",
    "order_discount_codes",
    "order_line_items",
    "order_addresses",
    "order_status_history",
    "orders",
    "customer_addresses",
    "customers",
)
