"""Plain builders of the data the tests send: event envelopes, orders, customers.

Every value is fixed (no clock, no randomness): the same call gives the same
dict in every run. Times are minutes after :data:`BASE` (18:00 in Mexico City)
unless a builder says otherwise.

- :func:`order_event`, :func:`customer_event`, :func:`sparse_delete`: envelopes
  around :func:`order_data` / :func:`customer_data`, for the apply rules, the
  receiver and everything in between.
- :func:`posted_order`: an order event written out in wire strings with a
  given number of line items and the buyer's e-mail in known places, for the
  suites that look at what logs, metrics and ``syncd status`` show.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

MEXICO_CITY = timezone(timedelta(hours=-6))
BASE = datetime(2026, 11, 27, 18, 0, tzinfo=MEXICO_CITY)

# Personal data that logs, metrics and error messages must never echo.
EMAIL_A = "ana.lopez.ops@example.mx"
EMAIL_B = "beto.ruiz.ops@correo.example.com"
SECRET_BITS = (
    "Ximena",
    "Quetzal",
    "ximena.quetzal@example.com",
    "+52 55 9999 0000",
    "Calle Oculta",
)


def at(minute: float) -> str:
    """A wire timestamp ``minute`` minutes after 18:00 in Mexico City (-06:00)."""
    return (BASE + timedelta(minutes=minute)).isoformat()


def utc_at(minute: float) -> datetime:
    return (BASE + timedelta(minutes=minute)).astimezone(UTC)


def utc(moment: str) -> datetime:
    """A UTC instant written without its offset, e.g. ``utc("2026-11-28T00:04:05")``."""
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


def address(first_name: str = "Ana", **changes: Any) -> dict[str, Any]:
    return {
        "first_name": first_name,
        "last_name": "García",
        "company": None,
        "address1": "Av. Insurgentes Sur 1602",
        "address2": None,
        "city": "Ciudad de México",
        "province": "CDMX",
        "zip": "03940",
        "country_code": "MX",
        "phone": None,
        **changes,
    }


def line_item(
    item_id: str, *, quantity: int = 1, price: str = "100.00", **changes: Any
) -> dict[str, Any]:
    total = str(Decimal(price) * quantity)
    return {
        "id": item_id,
        "product_id": f"prod_{item_id}",
        "variant_id": None,
        "sku": f"SKU-{item_id}",
        "title": f"Producto {item_id}",
        "variant_title": None,
        "quantity": quantity,
        "price": price,
        "total_discount": "0.00",
        "total": total,
        **changes,
    }


def customer_data(
    customer_id: str = "cus_1", *, updated_at: float = 0, **changes: Any
) -> dict[str, Any]:
    return {
        "id": customer_id,
        "email": f"{customer_id}@example.com",
        "first_name": "Ana",
        "last_name": "García",
        "phone": None,
        "accepts_marketing": True,
        "orders_count": 1,
        "total_spent": "116.00",
        "tags": [],
        "addresses": [{"id": "adr_1", "default": True, **address()}],
        "created_at": at(-60),
        "updated_at": at(updated_at),
        **changes,
    }


def order_data(order_id: str = "ord_1", *, updated_at: float = 0, **changes: Any) -> dict[str, Any]:
    return {
        "id": order_id,
        "number": 1001,
        "status": "open",
        "financial_status": "pending",
        "fulfillment_status": "unfulfilled",
        "currency": "MXN",
        "subtotal": "100.00",
        "total_discounts": "0.00",
        "total_tax": "16.00",
        "total_shipping": "0.00",
        "total": "116.00",
        "email": "ana@example.com",
        "customer": None,
        "note": None,
        "tags": [],
        "line_items": [line_item("li_1")],
        "shipping_address": address(),
        "billing_address": None,
        "created_at": at(0),
        "updated_at": at(updated_at),
        "cancelled_at": None,
        "closed_at": None,
        **changes,
    }


def envelope(
    event_id: str, event_type: str, created_at: float, data: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": at(created_at),
        "data": data,
    }


def order_event(
    event_id: str,
    *,
    order_id: str = "ord_1",
    updated_at: float = 0,
    created_at: float | None = None,
    type: str = "order.updated",
    **changes: Any,
) -> dict[str, Any]:
    """An order event; its ``created_at`` defaults to the order's ``updated_at``."""
    when = updated_at if created_at is None else created_at
    return envelope(event_id, type, when, order_data(order_id, updated_at=updated_at, **changes))


def customer_event(
    event_id: str,
    *,
    customer_id: str = "cus_1",
    updated_at: float = 0,
    created_at: float | None = None,
    type: str = "customer.updated",
    **changes: Any,
) -> dict[str, Any]:
    when = updated_at if created_at is None else created_at
    data = customer_data(customer_id, updated_at=updated_at, **changes)
    return envelope(event_id, type, when, data)


def sparse_delete(
    event_id: str, resource: str, resource_id: str, created_at: float = 0
) -> dict[str, Any]:
    return envelope(event_id, f"{resource}.deleted", created_at, {"id": resource_id})


def placed(order_id: str, created_at: str, event_id: str | None = None) -> dict[str, Any]:
    """``order.created`` of an order placed at the wire timestamp ``created_at``."""
    data = order_data(order_id, created_at=created_at, updated_at=0)
    data["updated_at"] = created_at
    return envelope(event_id or f"evt_{order_id}", "order.created", 0, data)


def private_order(event_id: str, **changes: Any) -> dict[str, Any]:
    """An order full of personal data (:data:`SECRET_BITS`) that an error message
    must not echo."""
    buyer = customer_data(
        "cus_9",
        first_name="Ximena",
        last_name="Quetzal",
        email="ximena.quetzal@example.com",
        phone="+52 55 9999 0000",
    )
    event = order_event(
        event_id,
        order_id=f"ord_{event_id}",
        email="ximena.quetzal@example.com",
        customer=buyer,
        shipping_address=address("Ximena", address1="Calle Oculta 7"),
    )
    event["data"].update(changes)
    return event


def posted_order(
    event_id: str,
    order_id: str,
    *,
    updated_at: str = "2026-03-01T10:00:00-06:00",
    items: int = 2,
    event_type: str = "order.created",
    email: str = EMAIL_A,
) -> dict[str, Any]:
    """An order event as Shoperti posts it, with ``items`` line items.

    Unlike :func:`order_event`, its times are wire strings, and the buyer's
    ``email`` is on the order and on its nested customer (``cus-<order_id>``):
    the data the ops suites check never shows in logs or metrics."""
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created_at": updated_at,
        "data": {
            "id": order_id,
            "number": zlib.crc32(order_id.encode()) % 100_000,  # the same in every run
            "status": "open",
            "financial_status": "paid",
            "currency": "MXN",
            "total": "100.50",
            "email": email,
            "customer": {"id": f"cus-{order_id}", "email": email, "first_name": "Ana"},
            "line_items": [
                {
                    "id": f"{order_id}-li-{n}",
                    "sku": f"SKU-{n}",
                    "quantity": n + 1,
                    "price": "10.00",
                    "total": f"{10 * (n + 1)}.00",
                }
                for n in range(items)
            ],
            "shipping_address": {"first_name": "Ana", "city": "CDMX", "country_code": "MX"},
            "created_at": "2026-03-01T09:00:00-06:00",
            "updated_at": updated_at,
        },
    }


def nested(depth: int) -> Any:
    """``"bottom"`` inside ``depth`` lists: JSON nested ``depth`` deep."""
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value
