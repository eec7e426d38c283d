"""Analyst views: order_facts, daily_sales and customer_facts.

The definitions of "counted order", net sales, refunds by the day they were
made, the customer's order sequence and cohort, written once in portable
SQL (window functions and CTEs exist on SQLite, PostgreSQL and MariaDB).
Local days come from the stored ``created_date_local`` columns, so no view
needs time zone tables in the database. Only two expressions differ by
dialect: hours between two times, and the first day of a date's month.
docs/data-dictionary.md documents every column with its definition.

This migration keeps its own copy of the SQL: a later change to a view is
a new migration, not an edit here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("customer_facts", "daily_sales", "order_facts")  # in the order they are dropped


def _hours(later: str, earlier: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier})) / 3600.0"
    if dialect in ("mysql", "mariadb"):
        return f"TIMESTAMPDIFF(MICROSECOND, {earlier}, {later}) / 3600000000.0"
    return f"(julianday({later}) - julianday({earlier})) * 24.0"


def _month_start(day: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f"CAST(date_trunc('month', {day}) AS date)"
    if dialect in ("mysql", "mariadb"):
        return f"DATE_SUB({day}, INTERVAL DAYOFMONTH({day}) - 1 DAY)"
    return f"date({day}, 'start of month')"


def order_facts(dialect: str) -> str:
    hours = _hours("fulfilled.first_fulfilled_at", "o.created_at", dialect)
    return f"""
CREATE VIEW order_facts AS
WITH line_totals AS (
    SELECT store, order_id,
           SUM(price * quantity) AS gross_sales,
           SUM(total_discount) AS line_discounts,
           SUM(quantity) AS units
    FROM order_line_items
    GROUP BY store, order_id
), refund_totals AS (
    SELECT store, order_id, SUM(amount) AS refunded
    FROM order_refunds
    GROUP BY store, order_id
), payment_totals AS (
    SELECT store, order_id,
           SUM(CASE WHEN status = 'success' AND kind IN ('sale', 'capture') THEN amount
                    WHEN status = 'success' AND kind = 'refund' THEN -amount
                    ELSE 0 END) AS paid
    FROM order_transactions
    GROUP BY store, order_id
), payments AS (
    SELECT store, order_id, gateway, payment_method,
           ROW_NUMBER() OVER (
               PARTITION BY store, order_id ORDER BY created_at, position
           ) AS payment_rank
    FROM order_transactions
    WHERE status = 'success' AND kind IN ('sale', 'capture')
), fulfilled AS (
    SELECT store, order_id, MIN(created_at) AS first_fulfilled_at
    FROM order_fulfillments
    WHERE status = 'success'
    GROUP BY store, order_id
), sequence AS (
    SELECT store, id,
           ROW_NUMBER() OVER (
               PARTITION BY store, customer_id ORDER BY created_at, id
           ) AS customer_order_seq
    FROM orders
    WHERE NOT deleted AND cancelled_at IS NULL AND customer_id IS NOT NULL
)
SELECT
    o.store AS store,
    o.id AS order_id,
    o.number AS number,
    o.created_at AS created_at,
    o.created_at_local AS created_at_local,
    o.created_date_local AS created_date_local,
    o.customer_id AS customer_id,
    (o.customer_id IS NULL) AS is_guest,
    sequence.customer_order_seq AS customer_order_seq,
    COALESCE(sequence.customer_order_seq > 1, 1 = 0) AS is_repeat,
    o.currency AS currency,
    COALESCE(line_totals.gross_sales, 0) AS gross_sales,
    COALESCE(line_totals.line_discounts, 0) + COALESCE(o.total_discounts, 0) AS discounts,
    COALESCE(o.total_tax, 0) AS tax,
    COALESCE(o.total_shipping, 0) AS shipping,
    COALESCE(o.total, 0) AS total,
    COALESCE(refund_totals.refunded, 0) AS refunded,
    COALESCE(line_totals.gross_sales, 0) - COALESCE(line_totals.line_discounts, 0)
        - COALESCE(o.total_discounts, 0) - COALESCE(refund_totals.refunded, 0) AS net_sales,
    COALESCE(payment_totals.paid, 0) AS paid,
    payments.gateway AS payment_gateway,
    payments.payment_method AS payment_method,
    o.financial_status AS financial_status,
    o.fulfillment_status AS fulfillment_status,
    (o.cancelled_at IS NOT NULL) AS is_cancelled,
    fulfilled.first_fulfilled_at AS first_fulfilled_at,
    {hours} AS hours_to_first_fulfillment,
    COALESCE(line_totals.units, 0) AS units
FROM orders o
LEFT JOIN line_totals ON line_totals.store = o.store AND line_totals.order_id = o.id
LEFT JOIN refund_totals ON refund_totals.store = o.store AND refund_totals.order_id = o.id
LEFT JOIN payment_totals ON payment_totals.store = o.store AND payment_totals.order_id = o.id
LEFT JOIN payments
    ON payments.store = o.store AND payments.order_id = o.id AND payments.payment_rank = 1
LEFT JOIN fulfilled ON fulfilled.store = o.store AND fulfilled.order_id = o.id
LEFT JOIN sequence ON sequence.store = o.store AND sequence.id = o.id
WHERE NOT o.deleted
"""


DAILY_SALES = """
CREATE VIEW daily_sales AS
WITH day_orders AS (
    SELECT store, created_date_local AS day,
           COUNT(*) AS orders,
           SUM(units) AS units,
           SUM(gross_sales) AS gross_sales,
           SUM(discounts) AS discounts,
           SUM(tax) AS tax,
           SUM(shipping) AS shipping,
           SUM(total) AS total_sales,
           SUM(CASE WHEN customer_order_seq = 1 THEN 1 ELSE 0 END) AS new_customer_orders,
           SUM(CASE WHEN customer_order_seq > 1 THEN 1 ELSE 0 END) AS repeat_customer_orders,
           SUM(CASE WHEN customer_id IS NULL THEN 1 ELSE 0 END) AS guest_orders
    FROM order_facts
    WHERE NOT is_cancelled AND created_date_local IS NOT NULL
    GROUP BY store, created_date_local
), day_refunds AS (
    SELECT r.store AS store, r.created_date_local AS day, SUM(r.amount) AS refunds
    FROM order_refunds r
    JOIN orders o ON o.store = r.store AND o.id = r.order_id
    WHERE NOT o.deleted AND r.created_date_local IS NOT NULL
    GROUP BY r.store, r.created_date_local
), days AS (
    SELECT store, day FROM day_orders
    UNION
    SELECT store, day FROM day_refunds
)
SELECT
    days.store AS store,
    days.day AS date,
    COALESCE(day_orders.orders, 0) AS orders,
    COALESCE(day_orders.units, 0) AS units,
    COALESCE(day_orders.gross_sales, 0) AS gross_sales,
    COALESCE(day_orders.discounts, 0) AS discounts,
    COALESCE(day_orders.tax, 0) AS tax,
    COALESCE(day_orders.shipping, 0) AS shipping,
    COALESCE(day_orders.total_sales, 0) AS total_sales,
    COALESCE(day_refunds.refunds, 0) AS refunds,
    COALESCE(day_orders.gross_sales, 0) - COALESCE(day_orders.discounts, 0)
        - COALESCE(day_refunds.refunds, 0) AS net_sales,
    CASE WHEN day_orders.orders > 0 THEN day_orders.total_sales / day_orders.orders END
        AS average_order_value,
    COALESCE(day_orders.new_customer_orders, 0) AS new_customer_orders,
    COALESCE(day_orders.repeat_customer_orders, 0) AS repeat_customer_orders,
    COALESCE(day_orders.guest_orders, 0) AS guest_orders
FROM days
LEFT JOIN day_orders ON day_orders.store = days.store AND day_orders.day = days.day
LEFT JOIN day_refunds ON day_refunds.store = days.store AND day_refunds.day = days.day
"""


def customer_facts(dialect: str) -> str:
    cohort = _month_start(
        "MIN(CASE WHEN f.customer_order_seq = 1 THEN f.created_date_local END)", dialect
    )
    return f"""
CREATE VIEW customer_facts AS
SELECT
    c.store AS store,
    c.id AS customer_id,
    c.email AS email,
    COUNT(f.order_id) AS orders,
    MIN(f.created_at) AS first_order_at,
    MAX(f.created_at) AS last_order_at,
    {cohort} AS cohort_month,
    COALESCE(SUM(f.total), 0) AS lifetime_total,
    COALESCE(SUM(f.refunded), 0) AS lifetime_refunded,
    COALESCE(SUM(f.net_sales), 0) AS lifetime_net_sales,
    CASE WHEN COUNT(f.order_id) > 0 THEN SUM(f.total) / COUNT(f.order_id) END
        AS average_order_value
FROM customers c
LEFT JOIN order_facts f
    ON f.store = c.store AND f.customer_id = c.id AND NOT f.is_cancelled
WHERE NOT c.deleted
GROUP BY c.store, c.id, c.email
"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(order_facts(dialect))
    op.execute(DAILY_SALES)
    op.execute(customer_facts(dialect))


def downgrade() -> None:
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
