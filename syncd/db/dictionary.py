"""The data dictionary for BI users, generated from the tables' comments.

``syncd db dictionary`` prints it; ``docs/data-dictionary.md`` is its
committed copy, and a test fails when the two differ.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, DateTime, Integer, String, Table, Text
from sqlalchemy.types import TypeEngine

from syncd.db import views
from syncd.db.dialect import Money, UTCDateTime
from syncd.db.models import metadata

EXAMPLES: dict[str, str] = {
    "store": "default",
    "events.id": "cjld2cjxh0000qzrmn831i7rn",
    "type": "order.paid",
    "resource": "order",
    "resource_id": "cjld2cz6k0001qzrm3b7o2xwe",
    "source": "webhook",
    "events.status": "applied",
    "verified": "true",
    "attempts": "1",
    "last_error": "order.total: not a decimal amount",
    "payload": '{"id": "evt_…", "type": "order.paid", "data": {…}}',
    "raw": '{"id": "…", "number": 1001, …}',
    "id": "cjld2cz6k0001qzrm3b7o2xwe",
    "number": "1001",
    "status": "open",
    "financial_status": "paid",
    "fulfillment_status": "fulfilled",
    "currency": "MXN",
    "subtotal": "1000.0000",
    "total_discounts": "0.0000",
    "total_tax": "160.0000",
    "total_shipping": "99.0000",
    "total": "1259.0000",
    "total_spent": "4523.5000",
    "price": "250.0000",
    "total_discount": "0.0000",
    "customer_id": "cjld2d1x90002qzrmq0s3f4h1",
    "order_id": "cjld2cz6k0001qzrm3b7o2xwe",
    "event_id": "cjld2cjxh0000qzrmn831i7rn",
    "event_type": "order.paid",
    "last_event_id": "cjld2cjxh0000qzrmn831i7rn",
    "email": "ana.pena@example.com",
    "note": "Entregar después de las 5 pm",
    "tags": "mayoreo, vip",
    "position": "1",
    "product_id": "prod_8812",
    "variant_id": "var_8812_m",
    "sku": "CAM-ALG-M",
    "title": "Camisa de algodón",
    "variant_title": "M / Azul",
    "quantity": "2",
    "kind": "shipping",
    "order_transactions.id": "txn_3f9a1c",
    "order_transactions.kind": "sale",
    "order_transactions.status": "success",
    "gateway": "conekta",
    "payment_method": "card",
    "amount": "1259.0000",
    "authorization": "AUTH-4821",
    "error_code": "card_declined",
    "order_refunds.id": "ref_71b2",
    "refund_id": "ref_71b2",
    "line_item_id": "li_8812_1",
    "restock": "true",
    "order_fulfillments.id": "ful_52c0",
    "fulfillment_id": "ful_52c0",
    "order_fulfillments.status": "success",
    "tracking_company": "Estafeta",
    "tracking_number": "8055712345",
    "tracking_url": "https://rastreo.example.com/8055712345",
    "code": "BUENFIN",
    "order_discount_codes.type": "percentage",
    "order_discount_codes.amount": "100.0000",
    "first_name": "José",
    "last_name": "Muñoz",
    "company": "Abarrotes Peña",
    "address1": "Av. Insurgentes Sur 1602",
    "address2": "Col. Crédito Constructor",
    "city": "Ciudad de México",
    "province": "CDMX",
    "zip": "03940",
    "country_code": "MX",
    "phone": "+52 55 1234 5678",
    "accepts_marketing": "false",
    "orders_count": "3",
    "is_default": "true",
    "deleted": "false",
    "sync_state.name": "events_cursor",
    "value": '{"at": "2026-11-28T00:00:00+00:00"}',
}
TIME_EXAMPLE = "2026-11-28 00:04:05+00"
LOCAL_TIME_EXAMPLE = "2026-11-27 18:04:05"  # the same moment in Mexico City
LOCAL_DATE_EXAMPLE = "2026-11-27"


def _type_name(type_: TypeEngine[object]) -> str:
    if isinstance(type_, UTCDateTime):
        return "timestamp (UTC)"
    if isinstance(type_, DateTime):
        return "timestamp (store-local, no zone)"
    if isinstance(type_, Date):
        return "date (store-local)"
    if isinstance(type_, Money):
        return "decimal(19,4)"
    if isinstance(type_, Boolean):
        return "boolean"
    if isinstance(type_, Integer):
        return "integer"
    if isinstance(type_, String) and not isinstance(type_, Text) and type_.length:
        return f"text (≤ {type_.length})"
    if isinstance(type_, Text | String):
        return "text"
    return "JSON"


def _example(table: Table, column: Column[object]) -> str:
    if isinstance(column.type, UTCDateTime):
        return TIME_EXAMPLE
    if isinstance(column.type, DateTime):
        return LOCAL_TIME_EXAMPLE
    if isinstance(column.type, Date):
        return LOCAL_DATE_EXAMPLE
    return EXAMPLES.get(f"{table.name}.{column.name}", EXAMPLES.get(column.name, ""))


def render() -> str:
    lines = [
        "# syncd data dictionary",
        "",
        "Generated from the table and column comments by `syncd db dictionary`;",
        "do not edit by hand. Money is exact decimal; every timestamp is UTC",
        "except the `*_local` columns, which hold the store's own wall-clock time",
        "and day (its `timezone` setting); every key starts with `store`; rows",
        "are never deleted (see `deleted`).",
        "",
        "An order's lists (line items, addresses, transactions, refunds and their",
        "lines, fulfillments and their lines, discount codes) are replaced as a",
        "whole by each newer version of the order. A version whose list names the",
        "same id twice (the same line item twice in one refund or fulfillment, the",
        "same discount code twice) is not applied: its event is marked `failed`",
        "with a reason naming the list, and the tables keep the previous version.",
        "",
    ]
    for table in sorted(metadata.sorted_tables, key=lambda t: t.name):
        key = ", ".join(c.name for c in table.primary_key.columns)
        lines += [f"## `{table.name}`", "", str(table.comment), "", f"Key: `{key}`", ""]
        lines += ["| column | type | null | meaning | example |", "| --- | --- | --- | --- | --- |"]
        for column in table.columns:
            cells = [
                f"`{column.name}`",
                _type_name(column.type),
                "yes" if column.nullable else "no",
                str(column.comment).replace("|", "\\|"),
                _example(table, column).replace("|", "\\|"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += views.render()
    return "\n".join(lines)
