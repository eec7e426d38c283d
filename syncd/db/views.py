"""The analyst views, as BI users read about them: each view and column with
its definition. The views themselves are created by a migration (0006);
``docs/data-dictionary.md`` shows this text, and a test holds the columns
listed here to the columns each view has on every database."""

from __future__ import annotations

from typing import NamedTuple


class ViewColumn(NamedTuple):
    name: str
    type: str
    meaning: str


class View(NamedTuple):
    name: str
    about: str
    columns: tuple[ViewColumn, ...]


COUNTED = (
    "A **counted order** is one that is not deleted and not cancelled (`cancelled_at` is "
    "null). Deleted orders and customers never appear. Amounts are in the order's currency "
    "(no conversion). On SQLite the sums are floating point; on PostgreSQL and MariaDB exact."
)

ORDER_FACTS = View(
    "order_facts",
    "One row per non-deleted order, with its amounts, payment, fulfillment and the "
    "customer's order sequence worked out once. " + COUNTED,
    (
        ViewColumn("store", "text", "Store name."),
        ViewColumn("order_id", "text", "Order id (orders.id)."),
        ViewColumn("number", "integer", "Order number shown to the merchant."),
        ViewColumn("created_at", "timestamp (UTC)", "When the order was placed."),
        ViewColumn("created_at_local", "timestamp (store-local)", "The same, store wall clock."),
        ViewColumn("created_date_local", "date (store-local)", "The store's day of the order."),
        ViewColumn("customer_id", "text", "Customer id; null for a guest checkout."),
        ViewColumn("is_guest", "boolean", "True when the order has no customer."),
        ViewColumn(
            "customer_order_seq",
            "integer",
            "1-based rank of this order among its customer's counted orders, by created_at, "
            "then order_id; null for guests and for orders that are not counted.",
        ),
        ViewColumn(
            "is_repeat", "boolean", "customer_order_seq > 1 (false when the sequence is null)."
        ),
        ViewColumn("currency", "text", "ISO 4217 currency of the amounts."),
        ViewColumn("gross_sales", "decimal", "Σ line price * quantity, before any discount."),
        ViewColumn("discounts", "decimal", "Σ line total_discount + the order's total_discounts."),
        ViewColumn("tax", "decimal", "The order's total_tax."),
        ViewColumn("shipping", "decimal", "The order's total_shipping."),
        ViewColumn("total", "decimal", "The order's total."),
        ViewColumn(
            "refunded", "decimal", "Σ amount of the order's refunds (whenever they were made)."
        ),
        ViewColumn("net_sales", "decimal", "gross_sales - discounts - refunded."),
        ViewColumn(
            "paid",
            "decimal",
            "Money actually received: Σ amount of success transactions of kind sale or capture, "
            "minus Σ amount of success transactions of kind refund.",
        ),
        ViewColumn(
            "payment_gateway",
            "text",
            "Gateway of the earliest success sale or capture (by created_at, then list "
            "position); null if none.",
        ),
        ViewColumn("payment_method", "text", "Payment method of that same transaction."),
        ViewColumn("financial_status", "text", "The order's payment status."),
        ViewColumn("fulfillment_status", "text", "The order's shipping status."),
        ViewColumn("is_cancelled", "boolean", "True when cancelled_at is set."),
        ViewColumn(
            "first_fulfilled_at",
            "timestamp (UTC)",
            "Earliest created_at of a fulfillment with status success; null if none.",
        ),
        ViewColumn(
            "hours_to_first_fulfillment",
            "number",
            "Hours from created_at to first_fulfilled_at (fractional); null if not fulfilled.",
        ),
        ViewColumn("units", "integer", "Σ quantity of the order's lines."),
    ),
)

DAILY_SALES = View(
    "daily_sales",
    "One row per store and local day that has counted orders or refunds. Orders count on "
    "the local day they were placed; refunds on the local day they were made, whatever the "
    "order's own day (refunds of cancelled orders count, of deleted ones not). " + COUNTED,
    (
        ViewColumn("store", "text", "Store name."),
        ViewColumn("date", "date (store-local)", "The store's day."),
        ViewColumn("orders", "integer", "Counted orders placed that day."),
        ViewColumn("units", "integer", "Σ units of those orders."),
        ViewColumn("gross_sales", "decimal", "Σ gross_sales of those orders."),
        ViewColumn("discounts", "decimal", "Σ discounts of those orders."),
        ViewColumn("tax", "decimal", "Σ tax of those orders."),
        ViewColumn("shipping", "decimal", "Σ shipping of those orders."),
        ViewColumn("total_sales", "decimal", "Σ total of those orders."),
        ViewColumn(
            "refunds", "decimal", "Σ amount of refunds made that day on non-deleted orders."
        ),
        ViewColumn("net_sales", "decimal", "gross_sales - discounts - refunds."),
        ViewColumn("average_order_value", "decimal", "total_sales / orders; null without orders."),
        ViewColumn(
            "new_customer_orders", "integer", "Orders that day with customer_order_seq = 1."
        ),
        ViewColumn(
            "repeat_customer_orders", "integer", "Orders that day with customer_order_seq > 1."
        ),
        ViewColumn("guest_orders", "integer", "Orders that day without a customer."),
    ),
)

CUSTOMER_FACTS = View(
    "customer_facts",
    "One row per non-deleted customer, over that customer's counted orders; a customer "
    "without any has zeros and nulls. " + COUNTED,
    (
        ViewColumn("store", "text", "Store name."),
        ViewColumn("customer_id", "text", "Customer id (customers.id)."),
        ViewColumn("email", "text", "The customer's e-mail address."),
        ViewColumn("orders", "integer", "Counted orders."),
        ViewColumn("first_order_at", "timestamp (UTC)", "created_at of the first counted order."),
        ViewColumn("last_order_at", "timestamp (UTC)", "created_at of the last counted order."),
        ViewColumn(
            "cohort_month",
            "date (store-local)",
            "First day of the local month of the first counted order.",
        ),
        ViewColumn("lifetime_total", "decimal", "Σ total of the counted orders."),
        ViewColumn("lifetime_refunded", "decimal", "Σ refunded of the counted orders."),
        ViewColumn("lifetime_net_sales", "decimal", "Σ net_sales of the counted orders."),
        ViewColumn(
            "average_order_value",
            "decimal",
            "lifetime_total / orders; null without orders.",
        ),
    ),
)

VIEWS: tuple[View, ...] = (ORDER_FACTS, DAILY_SALES, CUSTOMER_FACTS)


def render() -> list[str]:
    """The views' part of the data dictionary, as Markdown lines."""
    lines = [
        "## Views",
        "",
        "Ready answers for BI, defined once and identical on every database (see also docs/bi.md).",
        "",
    ]
    for view in VIEWS:
        lines += [f"### `{view.name}`", "", view.about, ""]
        lines += ["| column | type | definition |", "| --- | --- | --- |"]
        for column in view.columns:
            meaning = column.meaning.replace("|", "\\|")
            lines.append(f"| `{column.name}` | {column.type} | {meaning} |")
        lines.append("")
    return lines
