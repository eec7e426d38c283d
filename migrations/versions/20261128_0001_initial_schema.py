"""Initial schema: the tables of docs/data-dictionary.md.

Types come from syncd.db.dialect (UTC timestamps, exact money, JSON/JSONB);
those classes are part of the migration history and must not change meaning.
Ids use a binary collation on MariaDB/MySQL (exact comparison).

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28 04:21:06.648561
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

import syncd.db.dialect

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_addresses",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "customer_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Customer id (customers.id).",
        ),
        sa.Column(
            "id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Address id.",
        ),
        sa.Column(
            "position",
            sa.Integer(),
            nullable=False,
            comment="Place in the customer's list, from 1.",
        ),
        sa.Column(
            "is_default",
            sa.Boolean(),
            nullable=False,
            comment="True for the customer's default address.",
        ),
        sa.Column("first_name", sa.String(length=255), nullable=True, comment="First name."),
        sa.Column("last_name", sa.String(length=255), nullable=True, comment="Last name."),
        sa.Column("company", sa.String(length=255), nullable=True, comment="Company."),
        sa.Column("address1", sa.Text(), nullable=True, comment="Street and number."),
        sa.Column("address2", sa.Text(), nullable=True, comment="Apartment, suite, neighbourhood."),
        sa.Column("city", sa.String(length=255), nullable=True, comment="City."),
        sa.Column("province", sa.String(length=255), nullable=True, comment="State or province."),
        sa.Column("zip", sa.String(length=32), nullable=True, comment="Postal code."),
        sa.Column(
            "country_code",
            sa.String(length=8),
            nullable=True,
            comment="ISO 3166-1 alpha-2 country code.",
        ),
        sa.Column("phone", sa.String(length=64), nullable=True, comment="Phone number."),
        sa.PrimaryKeyConstraint("store", "customer_id", "id", name=op.f("pk_customer_addresses")),
        comment="Saved addresses of each customer's current version.",
    )
    op.create_table(
        "customers",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Shoperti customer id.",
        ),
        sa.Column("email", sa.String(length=320), nullable=True, comment="E-mail address."),
        sa.Column("first_name", sa.String(length=255), nullable=True, comment="First name."),
        sa.Column("last_name", sa.String(length=255), nullable=True, comment="Last name."),
        sa.Column("phone", sa.String(length=64), nullable=True, comment="Phone number."),
        sa.Column(
            "accepts_marketing",
            sa.Boolean(),
            nullable=True,
            comment="Whether the customer accepts marketing e-mail.",
        ),
        sa.Column(
            "orders_count",
            sa.Integer(),
            nullable=True,
            comment="Number of orders, as counted by Shoperti.",
        ),
        sa.Column(
            "total_spent",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Total spent, as computed by Shoperti.",
        ),
        sa.Column("tags", sa.Text(), nullable=True, comment="Tags, comma-separated."),
        sa.Column(
            "created_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When the customer signed up (UTC).",
        ),
        sa.Column(
            "updated_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When the customer last changed at Shoperti (UTC).",
        ),
        sa.Column(
            "deleted",
            sa.Boolean(),
            nullable=False,
            comment="True once the customer was deleted at Shoperti; rows are never removed.",
        ),
        sa.Column(
            "raw",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The customer JSON as received.",
        ),
        sa.Column(
            "last_event_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
            comment="Id of the event whose version of the customer this row holds.",
        ),
        sa.Column(
            "last_event_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="created_at of that event (UTC); versions order by updated_at, then this.",
        ),
        sa.Column(
            "synced_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=False,
            comment="When syncd last wrote this row (UTC).",
        ),
        sa.PrimaryKeyConstraint("store", "id", name=op.f("pk_customers")),
        comment="One row per customer, as of the newest version received.",
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index("ix_customers_email", ["store", "email"], unique=False)
        batch_op.create_index("ix_customers_updated_at", ["store", "updated_at"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Shoperti event id.",
        ),
        sa.Column(
            "type",
            sa.String(length=64),
            nullable=False,
            comment="Event type, e.g. order.paid or customer.updated.",
        ),
        sa.Column(
            "resource",
            sa.String(length=32),
            nullable=False,
            comment="Kind of object the event is about: order, customer, or other.",
        ),
        sa.Column(
            "resource_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
            comment="Id of the order or customer the event is about (NULL if unknown).",
        ),
        sa.Column(
            "created_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When Shoperti created the event (UTC).",
        ),
        sa.Column(
            "received_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=False,
            comment="When syncd first stored the event (UTC).",
        ),
        sa.Column(
            "source",
            sa.String(length=16),
            nullable=False,
            comment="How the event reached syncd: webhook, reconcile or backfill.",
        ),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="pending (not applied yet), applied, ignored (type not normalized), rejected (failed verification, never applied) or failed (gave up after retries).",
        ),
        sa.Column(
            "verified",
            sa.Boolean(),
            nullable=False,
            comment="True when the payload is the copy fetched from the Shoperti API.",
        ),
        sa.Column(
            "attempts",
            sa.Integer(),
            nullable=False,
            comment="How many times syncd tried to verify and apply the event.",
        ),
        sa.Column(
            "last_error",
            sa.Text(),
            nullable=True,
            comment="Why the last attempt failed or the event was rejected (no customer data).",
        ),
        sa.Column(
            "next_attempt_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="Earliest time of the next attempt for a pending event (retry backoff).",
        ),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The event JSON: the API's copy once verified, else the body as posted.",
        ),
        sa.Column(
            "processed_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When the event was applied, ignored, rejected or given up (UTC).",
        ),
        sa.PrimaryKeyConstraint("store", "id", name=op.f("pk_events")),
        comment="Every event received from Shoperti (webhook, reconcile or backfill), kept as received; the inbox the normalized tables are built from.",
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_claim", ["store", "status", "next_attempt_at"], unique=False
        )
        batch_op.create_index("ix_events_created_at", ["store", "created_at"], unique=False)
        batch_op.create_index(
            "ix_events_resource", ["store", "resource", "resource_id"], unique=False
        )

    op.create_table(
        "order_addresses",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "order_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Order id (orders.id).",
        ),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="shipping or billing."),
        sa.Column("first_name", sa.String(length=255), nullable=True, comment="First name."),
        sa.Column("last_name", sa.String(length=255), nullable=True, comment="Last name."),
        sa.Column("company", sa.String(length=255), nullable=True, comment="Company."),
        sa.Column("address1", sa.Text(), nullable=True, comment="Street and number."),
        sa.Column("address2", sa.Text(), nullable=True, comment="Apartment, suite, neighbourhood."),
        sa.Column("city", sa.String(length=255), nullable=True, comment="City."),
        sa.Column("province", sa.String(length=255), nullable=True, comment="State or province."),
        sa.Column("zip", sa.String(length=32), nullable=True, comment="Postal code."),
        sa.Column(
            "country_code",
            sa.String(length=8),
            nullable=True,
            comment="ISO 3166-1 alpha-2 country code.",
        ),
        sa.Column("phone", sa.String(length=64), nullable=True, comment="Phone number."),
        sa.PrimaryKeyConstraint("store", "order_id", "kind", name=op.f("pk_order_addresses")),
        comment="Shipping and billing address of each order's current version.",
    )
    op.create_table(
        "order_line_items",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "order_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Order id (orders.id).",
        ),
        sa.Column(
            "id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Line item id.",
        ),
        sa.Column("position", sa.Integer(), nullable=False, comment="Place in the order, from 1."),
        sa.Column(
            "product_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
            comment="Product id.",
        ),
        sa.Column(
            "variant_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
            comment="Product variant id.",
        ),
        sa.Column("sku", sa.String(length=255), nullable=True, comment="Stock keeping unit."),
        sa.Column("title", sa.Text(), nullable=True, comment="Product title."),
        sa.Column("variant_title", sa.Text(), nullable=True, comment="Variant title, e.g. size."),
        sa.Column("quantity", sa.Integer(), nullable=True, comment="Units ordered."),
        sa.Column(
            "price",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Unit price.",
        ),
        sa.Column(
            "total_discount",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Discount on this line.",
        ),
        sa.Column(
            "total",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Line total after discount.",
        ),
        sa.PrimaryKeyConstraint("store", "order_id", "id", name=op.f("pk_order_line_items")),
        comment="Line items of each order's current version.",
    )
    with op.batch_alter_table("order_line_items", schema=None) as batch_op:
        batch_op.create_index("ix_order_line_items_sku", ["store", "sku"], unique=False)

    op.create_table(
        "order_status_history",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "event_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Event id (events.id).",
        ),
        sa.Column(
            "order_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Order id (orders.id).",
        ),
        sa.Column(
            "event_type",
            sa.String(length=64),
            nullable=False,
            comment="Event type, e.g. order.paid.",
        ),
        sa.Column(
            "changed_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When the change happened (UTC): the order's updated_at, else the event's time.",
        ),
        sa.Column("status", sa.String(length=32), nullable=True, comment="Order status then."),
        sa.Column(
            "financial_status", sa.String(length=32), nullable=True, comment="Payment status then."
        ),
        sa.Column(
            "fulfillment_status",
            sa.String(length=32),
            nullable=True,
            comment="Shipping status then.",
        ),
        sa.PrimaryKeyConstraint("store", "event_id", name=op.f("pk_order_status_history")),
        comment="One row per order event: the order's statuses as that event saw them. Older events add their row even when they do not change the order.",
    )
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.create_index(
            "ix_order_status_history_order", ["store", "order_id", "changed_at"], unique=False
        )

    op.create_table(
        "orders",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=False,
            comment="Shoperti order id.",
        ),
        sa.Column(
            "number",
            sa.BigInteger(),
            nullable=True,
            comment="Order number shown to the merchant and the buyer.",
        ),
        sa.Column(
            "status", sa.String(length=32), nullable=True, comment="Order status, e.g. open."
        ),
        sa.Column(
            "financial_status",
            sa.String(length=32),
            nullable=True,
            comment="Payment status, e.g. pending, paid, refunded.",
        ),
        sa.Column(
            "fulfillment_status",
            sa.String(length=32),
            nullable=True,
            comment="Shipping status, e.g. unfulfilled, fulfilled.",
        ),
        sa.Column(
            "currency", sa.String(length=3), nullable=True, comment="ISO 4217 currency code."
        ),
        sa.Column(
            "subtotal",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Sum of the line items' totals, in the order's currency.",
        ),
        sa.Column(
            "total_discounts",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Order-level discounts.",
        ),
        sa.Column(
            "total_tax",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Taxes charged.",
        ),
        sa.Column(
            "total_shipping",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Shipping charged.",
        ),
        sa.Column(
            "total",
            syncd.db.dialect.Money(precision=19, scale=4),
            nullable=True,
            comment="Amount the buyer pays.",
        ),
        sa.Column(
            "customer_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
            comment="Customer id (customers.id); NULL for a guest checkout.",
        ),
        sa.Column("email", sa.String(length=320), nullable=True, comment="Buyer's e-mail address."),
        sa.Column("note", sa.Text(), nullable=True, comment="Note on the order."),
        sa.Column("tags", sa.Text(), nullable=True, comment="Tags, comma-separated."),
        sa.Column(
            "created_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When the order was placed (UTC).",
        ),
        sa.Column(
            "updated_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When the order last changed at Shoperti (UTC).",
        ),
        sa.Column(
            "cancelled_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When cancelled (UTC), or NULL.",
        ),
        sa.Column(
            "closed_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="When closed (UTC), or NULL.",
        ),
        sa.Column(
            "deleted",
            sa.Boolean(),
            nullable=False,
            comment="True once the order was deleted at Shoperti; rows are never removed.",
        ),
        sa.Column(
            "raw",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The order JSON as received, with every field, including ones not in columns.",
        ),
        sa.Column(
            "last_event_id",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=128), "mysql"),
            nullable=True,
            comment="Id of the event whose version of the order this row holds.",
        ),
        sa.Column(
            "last_event_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=True,
            comment="created_at of that event (UTC); orders versions by updated_at, then this.",
        ),
        sa.Column(
            "synced_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=False,
            comment="When syncd last wrote this row (UTC).",
        ),
        sa.PrimaryKeyConstraint("store", "id", name=op.f("pk_orders")),
        comment="One row per order, as of its newest version received.",
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_created_at", ["store", "created_at"], unique=False)
        batch_op.create_index("ix_orders_customer", ["store", "customer_id"], unique=False)
        batch_op.create_index("ix_orders_updated_at", ["store", "updated_at"], unique=False)

    op.create_table(
        "sync_state",
        sa.Column(
            "store",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=64), "mysql"),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column(
            "name",
            sa.String(length=64),
            nullable=False,
            comment="What the row records, e.g. events_cursor.",
        ),
        sa.Column(
            "value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
            comment="The recorded facts, as JSON.",
        ),
        sa.Column(
            "updated_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=False,
            comment="When the row was last written (UTC).",
        ),
        sa.PrimaryKeyConstraint("store", "name", name=op.f("pk_sync_state")),
        comment="Reconcile cursors, backfill checkpoints and last-run facts.",
    )


def downgrade() -> None:
    op.drop_table("sync_state")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_updated_at")
        batch_op.drop_index("ix_orders_customer")
        batch_op.drop_index("ix_orders_created_at")

    op.drop_table("orders")
    with op.batch_alter_table("order_status_history", schema=None) as batch_op:
        batch_op.drop_index("ix_order_status_history_order")

    op.drop_table("order_status_history")
    with op.batch_alter_table("order_line_items", schema=None) as batch_op:
        batch_op.drop_index("ix_order_line_items_sku")

    op.drop_table("order_line_items")
    op.drop_table("order_addresses")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_resource")
        batch_op.drop_index("ix_events_created_at")
        batch_op.drop_index("ix_events_claim")

    op.drop_table("events")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_updated_at")
        batch_op.drop_index("ix_customers_email")

    op.drop_table("customers")
    op.drop_table("customer_addresses")
