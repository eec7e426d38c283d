"""The apply path: events from the inbox into the normalized tables (docs/apply-rules.md).

Everything goes through the inbox and the worker's ``apply_pending`` (or, for
the property test, ``apply.collect`` + ``apply.write``), on SQLite, PostgreSQL
and MariaDB alike.

- ``tests/fixtures/events/<type>__<variant>.json``: one event body per file; the
  file name names the case and ``EXPECTED`` says what rows it must leave.
- The rules of §6: newer-only with its tie-breaks, history rows from older
  events, children replaced as a set, nested customers, sticky soft deletes,
  ignored types, malformed events failing alone.
- A property: any delivery order, duplicates and batching give the same tables.

What the inbox, the worker and the wire parser do on their own is in
test_inbox, test_worker and test_wire; money and time reading back exactly,
in test_dialect.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from syncd import apply
from syncd.db.models import NORMALIZED
from syncd.shoperti import wire
from syncd.worker import apply_pending
from tests.factories import (
    SECRET_BITS,
    address,
    customer_data,
    customer_event,
    envelope,
    line_item,
    order_data,
    order_event,
    private_order,
    sparse_delete,
    utc,
    utc_at,
)
from tests.support import (
    DELIVERIES,
    STORE,
    apply_all,
    apply_as,
    assert_all_times_utc,
    chronological,
    customer_row,
    deliver,
    event_status,
    order_row,
    rows,
    snapshot,
    write_batches,
)

FIXTURES = Path(__file__).parent / "fixtures" / "events"
D = Decimal


# --- 1. one test per fixture ----------------------------------------------------------------

ORDER_ID = "ord_cjld2cjxh0001qzrmn831i7rn"
ANA_ID = "cus_cjld2cyuq0000t3rmniod1foy"
LUPE_ID = "cus_cjld2cyuq0001t3rmlupita01"
JOSE_ID = "cus_cjld2cyuq0009t3rmuni0code"

ANA_ADDRESS = {
    "first_name": "Ana",
    "last_name": "García",
    "company": None,
    "address1": "Av. Insurgentes Sur 1602",
    "address2": "Piso 4, Col. Crédito Constructor",
    "city": "Ciudad de México",
    "province": "CDMX",
    "zip": "03940",
    "country_code": "MX",
    "phone": "+52 55 1234 5678",
}
BILLING_ADDRESS = {
    "first_name": "Ana",
    "last_name": "García",
    "company": "Distribuidora Polanco SA de CV",
    "address1": "Homero 1425",
    "address2": None,
    "city": "Ciudad de México",
    "province": "CDMX",
    "zip": "11560",
    "country_code": "MX",
    "phone": None,
}
UNICODE_ADDRESS = {
    "first_name": "José Ñandú",
    "last_name": "Peña y Nieto",
    "company": "Café Niño Héroe 🇲🇽",
    "address1": "Calle Sor Juana Inés de la Cruz 12",
    "address2": "Depto. 3º",
    "city": "Querétaro",
    "province": "Querétaro",
    "zip": "76000",
    "country_code": "MX",
    "phone": "+52 442 123 4567",
}


FULL_ORDER = {
    "store": "default",
    "id": ORDER_ID,
    "number": 1001,
    "status": "open",
    "financial_status": "pending",
    "fulfillment_status": "unfulfilled",
    "currency": "MXN",
    "subtotal": D("1099.00"),
    "total_discounts": D("100.00"),
    "total_tax": D("175.84"),
    "total_shipping": D("99.00"),
    "total": D("1373.84"),
    "customer_id": ANA_ID,
    "email": "ana.garcia@example.com",
    "note": "Entregar por la tarde",
    "tags": "web, buen-fin",
    "created_at": utc("2026-11-28T00:04:00"),
    "updated_at": utc("2026-11-28T00:04:05"),
    "cancelled_at": None,
    "closed_at": None,
    # 18:04 on the 27th in Mexico City (the default zone), the 28th in UTC.
    "created_at_local": datetime(2026, 11, 27, 18, 4),
    "created_date_local": date(2026, 11, 27),
    "deleted": False,
    "last_event_id": "evt_cjld2cjxh0000qzrmn831i7rn",
    "last_event_at": utc("2026-11-28T00:04:06"),
}
FULL_ITEMS = [
    {
        "store": "default",
        "order_id": ORDER_ID,
        "id": "li_cjld2d1",
        "position": 1,
        "product_id": "prod_1001",
        "variant_id": "var_1001_m",
        "sku": "PLY-ALG-M",
        "title": "Playera de algodón",
        "variant_title": "M / Negro",
        "quantity": 2,
        "price": D("349.50"),
        "total_discount": D("0"),
        "total": D("699.00"),
    },
    {
        "store": "default",
        "order_id": ORDER_ID,
        "id": "li_cjld2d2",
        "position": 2,
        "product_id": "prod_2002",
        "variant_id": "var_2002",
        "sku": "TAZ-001",
        "title": "Taza",
        "variant_title": None,
        "quantity": 1,
        "price": D("500"),
        "total_discount": D("100"),
        "total": D("400"),
    },
]
FULL_ADDRESSES = [
    {"store": "default", "order_id": ORDER_ID, "kind": "billing", **BILLING_ADDRESS},
    {"store": "default", "order_id": ORDER_ID, "kind": "shipping", **ANA_ADDRESS},
]
ANA = {
    "store": "default",
    "id": ANA_ID,
    "email": "ana.garcia@example.com",
    "first_name": "Ana",
    "last_name": "García",
    "phone": "+52 55 1234 5678",
    "accepts_marketing": True,
    "orders_count": 3,
    "total_spent": D("4520.50"),
    "tags": "vip, mayoreo",
    "created_at": utc("2025-03-14T15:26:53"),
    "updated_at": utc("2026-11-28T00:04:05"),
    "deleted": False,
    "last_event_id": "evt_cjld2cjxh0000qzrmn831i7rn",
    "last_event_at": utc("2026-11-28T00:04:06"),
}
ANA_ADDRESSES = [
    {
        "store": "default",
        "customer_id": ANA_ID,
        "id": "adr_cjld2d0ab0000",
        "position": 1,
        "is_default": True,
        **ANA_ADDRESS,
    }
]
LUPE = {
    "store": "default",
    "id": LUPE_ID,
    "email": "lupita.ramirez@example.com",
    "first_name": "Guadalupe",
    "last_name": "Ramírez",
    "phone": "+52 33 3615 0000",
    "accepts_marketing": False,
    "orders_count": 0,
    "total_spent": D("0.00"),
    "tags": "nuevo",
    "created_at": utc("2026-11-20T14:00:00"),
    "updated_at": utc("2026-11-20T14:00:00"),
    "deleted": False,
    "last_event_id": "evt_cjld2cm1a0000qzrm0000011",
    "last_event_at": utc("2026-11-20T14:00:01"),
}
LUPE_WORK = {
    "store": "default",
    "customer_id": LUPE_ID,
    "id": "adr_work",
    "position": 2,
    "is_default": True,
    "first_name": "Guadalupe",
    "last_name": "Ramírez",
    "company": "Tequilas del Valle",
    "address1": "López Cotilla 1500",
    "address2": "Oficina 2",
    "city": "Guadalajara",
    "province": "Jalisco",
    "zip": "44160",
    "country_code": "MX",
    "phone": "+52 33 3615 1111",
}
LUPE_HOME = {
    **LUPE_WORK,
    "id": "adr_home",
    "position": 1,
    "is_default": False,
    "company": None,
    "address1": "Av. Chapultepec 15",
    "address2": None,
    "zip": "44100",
    "phone": None,
}


def history(event_id: str, event_type: str, changed_at: str, **statuses: str) -> dict[str, Any]:
    return {
        "store": "default",
        "event_id": event_id,
        "order_id": ORDER_ID,
        "event_type": event_type,
        "changed_at": utc(changed_at),
        "status": "open",
        "financial_status": "pending",
        "fulfillment_status": "unfulfilled",
        **statuses,
    }


def placeholder(resource_id: str, **nulls: None) -> dict[str, Any]:
    """The row a deletion leaves for a resource never seen: only id and deleted."""
    return {"store": "default", "id": resource_id, "deleted": True, **nulls}


ORDER_NULLS = {name: None for name in FULL_ORDER if name not in ("store", "id", "deleted")}
CUSTOMER_NULLS = {name: None for name in ANA if name not in ("store", "id", "deleted")}


def expect_order_event(event_id: str, created: str, **order: Any) -> dict[str, Any]:
    """The rows the full order fixture leaves, changed by ``order`` for event ``event_id``."""
    stamp = {"last_event_id": event_id, "last_event_at": utc(created)}
    return {
        "orders": [{**FULL_ORDER, **stamp, **order}],
        "order_line_items": FULL_ITEMS,
        "order_addresses": FULL_ADDRESSES,
        "customers": [{**ANA, **stamp}],
        "customer_addresses": ANA_ADDRESSES,
    }


EXPECTED: dict[str, dict[str, Any]] = {
    "order.created__full": {
        "status": "applied",
        **expect_order_event("evt_cjld2cjxh0000qzrmn831i7rn", "2026-11-28T00:04:06"),
        "order_status_history": [
            history("evt_cjld2cjxh0000qzrmn831i7rn", "order.created", "2026-11-28T00:04:05")
        ],
    },
    "order.updated__money_as_numbers": {
        "status": "applied",
        **expect_order_event(
            "evt_cjld2ck1a0000qzrm0000002",
            "2026-11-28T00:10:01",
            subtotal=D("1099.00"),
            total_discounts=D("0.10"),
            total_tax=D("175.84"),
            total_shipping=D("0.20"),
            total=D("1275.14"),
            note="Cambió el envío",
            updated_at=utc("2026-11-28T00:10:00"),
        ),
        "order_status_history": [
            history("evt_cjld2ck1a0000qzrm0000002", "order.updated", "2026-11-28T00:10:00")
        ],
    },
    "order.paid__naive_timestamps": {
        "status": "applied",
        **expect_order_event(
            "evt_cjld2ck2b0000qzrm0000003",
            "2026-11-28T00:30:16",
            financial_status="paid",
            updated_at=utc("2026-11-28T00:30:15.250000"),
            closed_at=utc("2026-11-28T01:00:00"),
        ),
        "order_status_history": [
            history(
                "evt_cjld2ck2b0000qzrm0000003",
                "order.paid",
                "2026-11-28T00:30:15.250000",
                financial_status="paid",
            )
        ],
    },
    "order.fulfilled__unicode": {
        "status": "applied",
        "orders": [
            {
                **FULL_ORDER,
                "fulfillment_status": "fulfilled",
                "email": "jose.nandu@example.com",
                "customer_id": JOSE_ID,
                "note": "Envolver para regalo 🎁 — ¡gracias! «frágil» 東京 ✓",
                "tags": "regalo 🎁, envío exprés",
                "updated_at": utc("2026-11-29T16:00:00"),
                "last_event_id": "evt_cjld2ck3c0000qzrm0000004",
                "last_event_at": utc("2026-11-29T16:00:02"),
            }
        ],
        "order_line_items": [
            {
                **FULL_ITEMS[0],
                "title": "Café de Oaxaca ☕ «orgánico»",
                "variant_title": "Molido fino · 500 g",
            },
            FULL_ITEMS[1],
        ],
        "order_addresses": [
            {"store": "default", "order_id": ORDER_ID, "kind": kind, **UNICODE_ADDRESS}
            for kind in ("billing", "shipping")
        ],
        "customers": [
            {
                "store": "default",
                "id": JOSE_ID,
                "email": "jose.nandu@example.com",
                "first_name": "José Ñandú",
                "last_name": "Peña y Nieto 😀",
                "phone": None,
                "accepts_marketing": False,
                "orders_count": 1,
                "total_spent": D("1373.84"),
                "tags": None,  # an empty list of tags is NULL
                "created_at": utc("2026-11-27T23:00:00"),
                "updated_at": utc("2026-11-29T16:00:00"),
                "deleted": False,
                "last_event_id": "evt_cjld2ck3c0000qzrm0000004",
                "last_event_at": utc("2026-11-29T16:00:02"),
            }
        ],
        "customer_addresses": [
            {
                "store": "default",
                "customer_id": JOSE_ID,
                "id": "adr_uni1",
                "position": 1,
                "is_default": True,
                **UNICODE_ADDRESS,
            }
        ],
        "order_status_history": [
            history(
                "evt_cjld2ck3c0000qzrm0000004",
                "order.fulfilled",
                "2026-11-29T16:00:00",
                fulfillment_status="fulfilled",
            )
        ],
    },
    "order.cancelled__guest_checkout": {
        "status": "applied",
        "orders": [
            {
                **FULL_ORDER,
                "id": "ord_cjld2cjxh0002qzrmguest0001",
                "number": 1002,
                "status": "cancelled",
                "financial_status": "voided",
                "customer_id": None,
                "email": "invitado@example.com",
                "note": None,
                "tags": None,  # an empty list of tags is NULL
                "subtotal": D("699.00"),
                "total_discounts": D("0.00"),
                "total_tax": D("111.84"),
                "total_shipping": D("0.00"),
                "total": D("810.84"),
                "cancelled_at": utc("2026-11-28T01:15:30"),
                "updated_at": utc("2026-11-28T01:15:30"),
                "last_event_id": "evt_cjld2ck4d0000qzrm0000005",
                "last_event_at": utc("2026-11-28T01:15:31"),
            }
        ],
        "order_line_items": [{**FULL_ITEMS[0], "order_id": "ord_cjld2cjxh0002qzrmguest0001"}],
        "order_addresses": [
            {**row, "order_id": "ord_cjld2cjxh0002qzrmguest0001"} for row in FULL_ADDRESSES
        ],
        "order_status_history": [
            {
                **history(
                    "evt_cjld2ck4d0000qzrm0000005",
                    "order.cancelled",
                    "2026-11-28T01:15:30",
                    status="cancelled",
                    financial_status="voided",
                ),
                "order_id": "ord_cjld2cjxh0002qzrmguest0001",
            }
        ],
    },
    "order.refunded__null_addresses": {
        "status": "applied",
        **expect_order_event(
            "evt_cjld2ck5e0000qzrm0000006",
            "2026-12-01T15:00:01",
            financial_status="refunded",
            updated_at=utc("2026-12-01T15:00:00"),
            closed_at=utc("2026-12-01T15:00:00"),
        ),
        "order_addresses": [],
        "order_status_history": [
            history(
                "evt_cjld2ck5e0000qzrm0000006",
                "order.refunded",
                "2026-12-01T15:00:00",
                financial_status="refunded",
            )
        ],
    },
    "order.deleted__full": {
        "status": "applied",
        **expect_order_event(
            "evt_cjld2ck6f0000qzrm0000007",
            "2026-12-02T18:00:01",
            status="archived",
            deleted=True,
            updated_at=utc("2026-12-02T18:00:00"),
        ),
        "order_status_history": [
            history(
                "evt_cjld2ck6f0000qzrm0000007",
                "order.deleted",
                "2026-12-02T18:00:00",
                status="archived",
            )
        ],
    },
    "order.deleted__sparse": {
        "status": "applied",
        "orders": [placeholder("ord_cjld2cjxh0003qzrmgone0001", **ORDER_NULLS)],
    },
    "order.updated__unknown_fields": {
        "status": "applied",
        **expect_order_event(
            "evt_cjld2ck8h0000qzrm0000009",
            "2026-11-28T00:20:01",
            updated_at=utc("2026-11-28T00:20:00"),
        ),
        # Discount codes were an unknown field before syncd kept them.
        "order_discount_codes": [
            {
                "store": "default",
                "order_id": ORDER_ID,
                "code": "BUENFIN",
                "type": None,
                "amount": D("100.00"),
            }
        ],
        "order_status_history": [
            history("evt_cjld2ck8h0000qzrm0000009", "order.updated", "2026-11-28T00:20:00")
        ],
    },
    "order.updated__numeric_ids": {
        "status": "applied",
        "orders": [
            {
                **FULL_ORDER,
                "id": "450789469",
                "number": 1003,
                "customer_id": "207119551",
                "updated_at": utc("2026-11-28T00:30:00"),
                "last_event_id": "9876543210",
                "last_event_at": utc("2026-11-28T00:30:01"),
            }
        ],
        "order_line_items": [
            {
                **FULL_ITEMS[0],
                "order_id": "450789469",
                "id": "466157049",
                "product_id": "632910392",
                "variant_id": "39072856",
            },
            {
                **FULL_ITEMS[1],
                "order_id": "450789469",
                "id": "518995019",
                "product_id": "921728736",
                "variant_id": "457924702",
            },
        ],
        "order_addresses": [{**row, "order_id": "450789469"} for row in FULL_ADDRESSES],
        "customers": [
            {
                **ANA,
                "id": "207119551",
                "last_event_id": "9876543210",
                "last_event_at": utc("2026-11-28T00:30:01"),
            }
        ],
        "customer_addresses": [{**ANA_ADDRESSES[0], "customer_id": "207119551", "id": "207119552"}],
        "order_status_history": [
            {
                **history("9876543210", "order.updated", "2026-11-28T00:30:00"),
                "order_id": "450789469",
            }
        ],
    },
    "customer.created__full": {
        "status": "applied",
        "customers": [LUPE],
        "customer_addresses": [LUPE_HOME, LUPE_WORK],
    },
    "customer.updated__unicode_money_as_number": {
        "status": "applied",
        "customers": [
            {
                **LUPE,
                "first_name": "María José",
                "last_name": "Ñúñez 😀",
                "total_spent": D("1520.50"),
                "orders_count": 2,
                "tags": "vip, frecuente",
                "updated_at": utc("2026-11-26T02:45:10"),
                "last_event_id": "evt_cjld2cm2b0000qzrm0000012",
                "last_event_at": utc("2026-11-26T02:45:11"),
            }
        ],
        "customer_addresses": [
            {
                **LUPE_WORK,
                "position": 1,
                "address2": "Oficina 2 — planta baja",
                "city": "Zapopan",
            }
        ],
    },
    "customer.updated__absent_fields": {
        "status": "applied",
        "customers": [
            {
                **placeholder("cus_cjld2cyuq0002t3rmsparse01", **CUSTOMER_NULLS),
                "deleted": False,
                "email": "solo.correo@example.com",
                "created_at": utc("2026-11-21T10:00:00"),
                "updated_at": utc("2026-11-21T10:00:00"),
                "last_event_id": "evt_cjld2cm3c0000qzrm0000013",
                "last_event_at": utc("2026-11-21T10:00:01"),
            }
        ],
    },
    "customer.deleted__full": {
        "status": "applied",
        "customers": [
            {
                **LUPE,
                "deleted": True,
                "updated_at": utc("2026-12-03T13:00:00"),
                "last_event_id": "evt_cjld2cm4d0000qzrm0000014",
                "last_event_at": utc("2026-12-03T13:00:01"),
            }
        ],
        "customer_addresses": [LUPE_HOME, LUPE_WORK],
    },
    "customer.deleted__sparse": {
        "status": "applied",
        "customers": [placeholder("cus_cjld2cyuq0003t3rmgone0001", **CUSTOMER_NULLS)],
    },
    "shop.updated__unknown_type": {
        "status": "ignored",
        "last_error": "event type not normalized",
        "resource": "shop",
    },
    "product.updated__known_ignored": {
        "status": "ignored",
        "last_error": "products are not normalized",
        "resource": "product",
    },
}


# --- the fixtures of an order's money and shipping lists ---------------------------------


def txn_row(txn_id: str, position: int, **values: Any) -> dict[str, Any]:
    return {
        "store": "default",
        "order_id": ORDER_ID,
        "id": txn_id,
        "position": position,
        "kind": "sale",
        "status": "success",
        "currency": "MXN",
        "amount": D("1373.84"),
        "error_code": None,
        **values,
    }


def shipment_row(
    ful_id: str, company: str, number: str, url: str | None, at: str
) -> dict[str, Any]:
    return {
        "store": "default",
        "order_id": ORDER_ID,
        "id": ful_id,
        "status": "success",
        "tracking_company": company,
        "tracking_number": number,
        "tracking_url": url,
        "created_at": utc(at),
        "updated_at": utc(at),
    }


def shipped(ful_id: str, line_item_id: str, quantity: int) -> dict[str, Any]:
    return {
        "store": "default",
        "order_id": ORDER_ID,
        "fulfillment_id": ful_id,
        "line_item_id": line_item_id,
        "quantity": quantity,
    }


def code_row(code: str, kind: str, amount: str) -> dict[str, Any]:
    return {
        "store": "default",
        "order_id": ORDER_ID,
        "code": code,
        "type": kind,
        "amount": D(amount),
    }


def expect_list_fixture(
    event_id: str, event_type: str, changed: str, statuses: dict[str, str], **order: Any
) -> dict[str, Any]:
    """The full order fixture at a later version: ``changed`` is its updated_at
    (UTC), the event one second later."""
    later = (utc(changed) + timedelta(seconds=1)).isoformat()[:19]
    return {
        "status": "applied",
        **expect_order_event(event_id, later, updated_at=utc(changed), **statuses, **order),
        "order_status_history": [history(event_id, event_type, changed, **statuses)],
    }


VOUCHER = {
    "gateway": "oxxo",
    "payment_method": "oxxo",
    "authorization": "93000262749130",
    "created_at": utc("2026-11-28T00:04:05"),  # naive on the wire: UTC
    "processed_at": None,
}
LIST_FIXTURES: dict[str, dict[str, Any]] = {
    "order.paid__card_declined_then_paid": {
        **expect_list_fixture(
            "evt_cjld2cm0a0000qzrm0000101",
            "order.paid",
            "2026-11-28T00:30:00",
            {"financial_status": "paid"},
        ),
        "order_transactions": [
            txn_row(
                "txn_decl_1",
                1,
                status="failure",
                gateway="conekta",
                payment_method="card",
                authorization=None,
                error_code="card_declined",
                created_at=utc("2026-11-28T00:29:00"),
                processed_at=utc("2026-11-28T00:29:01"),
            ),
            txn_row(
                "txn_sale_2",
                2,
                gateway="conekta",
                payment_method="card",
                authorization="AUTH-4821",
                created_at=utc("2026-11-28T00:29:30"),
                processed_at=utc("2026-11-28T00:30:00"),
            ),
        ],
        "order_discount_codes": [code_row("BUENFIN", "fixed_amount", "100.00")],
    },
    "order.created__oxxo_voucher_pending": {
        "status": "applied",
        **expect_order_event("evt_cjld2cm0a0000qzrm0000102", "2026-11-28T00:04:06"),
        "order_status_history": [
            history("evt_cjld2cm0a0000qzrm0000102", "order.created", "2026-11-28T00:04:05")
        ],
        "order_transactions": [txn_row("txn_oxxo_1", 1, status="pending", **VOUCHER)],
    },
    "order.cancelled__oxxo_voucher_expired": {
        **expect_list_fixture(
            "evt_cjld2cm0a0000qzrm0000103",
            "order.cancelled",
            "2026-12-01T00:04:05",
            {"status": "cancelled", "financial_status": "voided"},
            cancelled_at=utc("2026-12-01T00:04:05"),
            closed_at=utc("2026-12-01T00:04:05"),
        ),
        "order_transactions": [txn_row("txn_oxxo_1", 1, status="expired", **VOUCHER)],
    },
    "order.refunded__partial_with_lines": {
        **expect_list_fixture(
            "evt_cjld2cm0a0000qzrm0000104",
            "order.refunded",
            "2026-12-02T01:30:00",
            {
                "status": "closed",
                "financial_status": "partially_refunded",
                "fulfillment_status": "fulfilled",
            },
            closed_at=utc("2026-11-29T16:00:00"),
        ),
        "order_transactions": [
            txn_row(
                "txn_pp_1",
                1,
                gateway="paypal",
                payment_method="paypal",
                authorization="PAYID-M4X",
                created_at=utc("2026-11-28T00:05:00"),
                processed_at=utc("2026-11-28T00:05:02"),
            ),
            txn_row(
                "txn_pp_2",
                2,
                kind="refund",
                gateway="paypal",
                payment_method="paypal",
                amount=D("464"),
                authorization="PAYID-R7Q",
                created_at=utc("2026-12-02T01:30:00"),
                processed_at=utc("2026-12-02T01:30:00"),
            ),
        ],
        "order_refunds": [
            {
                "store": "default",
                "order_id": ORDER_ID,
                "id": "ref_1",
                # 19:30 on the 1st in Mexico City: the 2nd in UTC, the 1st locally.
                "created_at": utc("2026-12-02T01:30:00"),
                "created_at_local": datetime(2026, 12, 1, 19, 30),
                "created_date_local": date(2026, 12, 1),
                "note": "Taza rota",
                "amount": D("464"),
                "restock": False,
            }
        ],
        "order_refund_line_items": [
            {
                "store": "default",
                "order_id": ORDER_ID,
                "refund_id": "ref_1",
                "line_item_id": "li_cjld2d2",
                "quantity": 1,
                "amount": D("400.00"),
            }
        ],
        "order_fulfillments": [
            shipment_row(
                "ful_1",
                "Estafeta",
                "8055712345",
                "https://rastreo.example.com/8055712345",
                "2026-11-29T16:00:00",
            )
        ],
        "order_fulfillment_line_items": [
            shipped("ful_1", "li_cjld2d1", 2),
            shipped("ful_1", "li_cjld2d2", 1),
        ],
    },
    "order.fulfilled__split_shipments": {
        **expect_list_fixture(
            "evt_cjld2cm0a0000qzrm0000105",
            "order.fulfilled",
            "2026-11-30T18:00:00",
            {"status": "closed", "financial_status": "paid", "fulfillment_status": "fulfilled"},
            closed_at=utc("2026-11-30T18:00:00"),
        ),
        "order_fulfillments": [
            shipment_row("ful_a", "DHL", "JD0001", None, "2026-11-28T18:00:00"),
            shipment_row("ful_b", "DHL", "4455667788", None, "2026-11-30T18:00:00"),
        ],
        "order_fulfillment_line_items": [
            shipped("ful_a", "li_cjld2d1", 1),
            shipped("ful_b", "li_cjld2d1", 1),
            shipped("ful_b", "li_cjld2d2", 1),
        ],
    },
    "order.paid__spei_numeric_ids": {
        **expect_list_fixture(
            "evt_cjld2cm0a0000qzrm0000106",
            "order.paid",
            "2026-11-28T02:00:00",
            {"financial_status": "paid"},
        ),
        "order_transactions": [
            txn_row(
                "90210",
                1,
                gateway="openpay",
                payment_method="spei",
                authorization="646180157000000004",
                created_at=utc("2026-11-28T01:55:00"),
                processed_at=utc("2026-11-28T02:00:00"),
            )
        ],
        "order_discount_codes": [code_row("VUELVE", "fixed_amount", "100")],
    },
}
EXPECTED.update(LIST_FIXTURES)


def fixture_names() -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob("*.json"))


def load_fixture(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))
    return payload


def test_every_fixture_has_expectations_and_every_type_a_fixture() -> None:
    names = fixture_names()
    assert set(names) == set(EXPECTED)
    types = {name.split("__")[0] for name in names}
    # Every type with a handler, so a handler added later needs its fixture.
    assert types >= set(apply.HANDLERS) == wire.NORMALIZED_EVENTS
    for name in names:
        assert load_fixture(name)["type"] == name.split("__")[0], name


@pytest.mark.parametrize("name", fixture_names())
def test_fixture(db: Any, name: str) -> None:
    payload = load_fixture(name)
    expected = EXPECTED[name]
    deliver(db.engine, payload)
    apply_all(db.engine)

    tables = snapshot(db.engine)
    for table in NORMALIZED:
        without_raw = [{k: v for k, v in row.items() if k != "raw"} for row in tables[table]]
        assert without_raw == expected.get(table, []), table
    assert_all_times_utc(tables)

    # raw keeps the resource as received, unknown fields included.
    data = payload["data"]
    if name.startswith("order.") and tables["orders"]:
        assert tables["orders"][0]["raw"] == data
        if data.get("customer"):
            assert tables["customers"][0]["raw"] == data["customer"]
    if name.startswith("customer."):
        assert tables["customers"][0]["raw"] == data

    [event] = rows(db.engine, "events")
    assert event["id"] == str(payload["id"])
    assert event["status"] == expected["status"]
    assert event["last_error"] == expected.get("last_error")
    assert event["resource"] == expected.get("resource", name.split(".")[0])
    assert event["resource_id"] == str(data["id"])
    assert event["source"] == "webhook"
    assert event["payload"] == payload
    assert event["created_at"] == datetime.fromisoformat(payload["created_at"]).astimezone(UTC)
    assert event["processed_at"] is not None
    assert event["attempts"] == 1


def test_unknown_fields_are_kept_in_raw_and_payload(db: Any) -> None:
    payload = load_fixture("order.updated__unknown_fields")
    deliver(db.engine, payload)
    apply_all(db.engine)
    raw = order_row(db.engine, ORDER_ID)["raw"]
    assert raw["gift_card"] == {"code": "XMAS-2026", "balance": "150.00"}
    assert raw["line_items"][0]["properties"] == [{"name": "Grabado", "value": "A & J"}]
    assert raw["shipping_address"]["latitude"] == 19.3717
    assert customer_row(db.engine, ANA_ID)["raw"]["loyalty_points"] == 120
    [event] = rows(db.engine, "events")
    assert (event["payload"]["livemode"], event["payload"]["api_version"]) == (True, "2026-10")


# --- 2. the rules of docs/apply-rules.md ----------------------------------------------------------


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_newer_updated_at_wins_over_later_event(db: Any, delivery: str) -> None:
    newer = order_event("evt_1", updated_at=5, created_at=1, status="closed")
    older = order_event("evt_2", updated_at=3, created_at=9, status="open")
    apply_as(db.engine, [newer, older], delivery)
    row = order_row(db.engine)
    assert (row["status"], row["updated_at"], row["last_event_id"]) == (
        "closed",
        utc_at(5),
        "evt_1",
    )


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_updated_at_tie_goes_to_the_later_event(db: Any, delivery: str) -> None:
    first = order_event("evt_b", updated_at=5, created_at=5, financial_status="pending")
    second = order_event("evt_a", updated_at=5, created_at=6, financial_status="paid")
    apply_as(db.engine, [first, second], delivery)
    row = order_row(db.engine)
    assert (row["financial_status"], row["last_event_id"], row["last_event_at"]) == (
        "paid",
        "evt_a",
        utc_at(6),
    )


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_full_tie_goes_to_the_greater_event_id(db: Any, delivery: str) -> None:
    # Same second for the order and for both events: only the id decides.
    low = order_event("evt_0001", updated_at=5, fulfillment_status="partial")
    high = order_event("evt_0002", updated_at=5, fulfillment_status="fulfilled")
    apply_as(db.engine, [high, low], delivery)
    row = order_row(db.engine)
    assert (row["fulfillment_status"], row["last_event_id"]) == ("fulfilled", "evt_0002")


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_customer_ties_break_the_same_way(db: Any, delivery: str) -> None:
    events = [
        customer_event("evt_c2", updated_at=7, created_at=7, first_name="Segunda"),
        customer_event("evt_c1", updated_at=7, created_at=8, first_name="Tercera"),
        customer_event("evt_c3", updated_at=7, created_at=7, first_name="Primera"),
        customer_event("evt_c0", updated_at=6, created_at=9, first_name="Vieja"),
    ]
    apply_as(db.engine, events, delivery)
    row = customer_row(db.engine)
    assert (row["first_name"], row["last_event_id"]) == ("Tercera", "evt_c1")


def test_sub_second_updated_at_is_compared_exactly(db: Any) -> None:
    later = order_event("evt_1", updated_at=5 + 0.5 / 60_000, status="later")  # +0.5 ms
    earlier = order_event("evt_2", updated_at=5, created_at=6, status="earlier")
    apply_as(db.engine, [later, earlier], "in order")
    assert order_row(db.engine)["status"] == "later"


def test_an_older_event_still_adds_its_history_row(db: Any) -> None:
    deliver(db.engine, order_event("evt_new", updated_at=10, financial_status="paid"))
    apply_all(db.engine)
    deliver(db.engine, order_event("evt_old", updated_at=2, financial_status="pending"))
    report = apply_all(db.engine)

    assert report.applied == 1
    assert event_status(db.engine, "evt_old") == ("applied", None)
    assert order_row(db.engine)["financial_status"] == "paid"
    history_rows = rows(db.engine, "order_status_history")
    assert [(h["event_id"], h["financial_status"], h["changed_at"]) for h in history_rows] == [
        ("evt_new", "paid", utc_at(10)),
        ("evt_old", "pending", utc_at(2)),
    ]


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_line_items_and_addresses_are_replaced_as_a_set(db: Any, delivery: str) -> None:
    v1 = order_event(
        "evt_1",
        updated_at=1,
        line_items=[line_item("li_1"), line_item("li_2"), line_item("li_3")],
        shipping_address=address("Ana"),
        billing_address=address("Ana", company="ACME"),
    )
    v2 = order_event(
        "evt_2",
        updated_at=2,
        line_items=[line_item("li_3", quantity=4), line_item("li_4", price="19.99")],
        shipping_address=address("Beto"),
        billing_address=None,
    )
    apply_as(db.engine, [v1, v2], delivery)

    items = rows(db.engine, "order_line_items")
    assert [(i["id"], i["position"], i["quantity"], i["total"]) for i in items] == [
        ("li_3", 1, 4, D("400.00")),
        ("li_4", 2, 1, D("19.99")),
    ]
    addresses = rows(db.engine, "order_addresses")
    assert [(a["kind"], a["first_name"], a["company"]) for a in addresses] == [
        ("shipping", "Beto", None)
    ]


def test_an_order_without_line_items_has_none_left(db: Any) -> None:
    deliver(db.engine, order_event("evt_1", updated_at=1, line_items=[line_item("li_1")]))
    apply_all(db.engine)
    deliver(db.engine, order_event("evt_2", updated_at=2, line_items=[]))
    apply_all(db.engine)
    assert rows(db.engine, "order_line_items") == []


def test_customer_addresses_are_replaced_as_a_set(db: Any) -> None:
    two = [
        {"id": "adr_1", "default": True, **address("Casa")},
        {"id": "adr_2", "default": False, **address("Oficina")},
    ]
    one = [{"id": "adr_2", "default": True, **address("Oficina", city="Puebla")}]
    deliver(db.engine, customer_event("evt_1", updated_at=1, addresses=two))
    deliver(db.engine, customer_event("evt_2", updated_at=2, addresses=one))
    apply_all(db.engine, limit=1)
    saved = rows(db.engine, "customer_addresses")
    assert [(a["id"], a["position"], a["is_default"], a["city"]) for a in saved] == [
        ("adr_2", 1, True, "Puebla")
    ]


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_an_older_nested_customer_does_not_roll_the_customer_back(db: Any, delivery: str) -> None:
    fresh = customer_event("evt_c", updated_at=10, first_name="Nueva", total_spent="900.00")
    stale = customer_data(updated_at=1, first_name="Vieja", total_spent="100.00", addresses=[])
    order = order_event("evt_o", updated_at=20, customer=stale)
    apply_as(db.engine, [fresh, order], delivery)

    customer = customer_row(db.engine)
    assert (customer["first_name"], customer["total_spent"], customer["last_event_id"]) == (
        "Nueva",
        D("900.00"),
        "evt_c",
    )
    assert len(rows(db.engine, "customer_addresses")) == 1
    assert order_row(db.engine)["customer_id"] == "cus_1"


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_newer_nested_customer_updates_the_customer(db: Any, delivery: str) -> None:
    old = customer_event("evt_c", updated_at=1, first_name="Vieja")
    newer = customer_data(updated_at=15, first_name="Nueva", accepts_marketing=False)
    order = order_event("evt_o", updated_at=20, created_at=21, customer=newer)
    apply_as(db.engine, [order, old], delivery)

    customer = customer_row(db.engine)
    assert (customer["first_name"], customer["accepts_marketing"]) == ("Nueva", False)
    assert (customer["updated_at"], customer["last_event_id"], customer["last_event_at"]) == (
        utc_at(15),
        "evt_o",
        utc_at(21),
    )


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_order_deletion_is_a_sticky_soft_delete(db: Any, delivery: str) -> None:
    events = [
        order_event("evt_1", updated_at=1, status="open"),
        order_event("evt_2", updated_at=2, type="order.deleted", status="archived"),
        order_event("evt_3", updated_at=3, status="open", note="después del borrado"),
        order_event("evt_0", updated_at=0, status="open"),
    ]
    apply_as(db.engine, events, delivery)
    row = order_row(db.engine)
    assert (row["deleted"], row["note"], row["last_event_id"]) == (
        True,
        "después del borrado",
        "evt_3",
    )
    assert len(rows(db.engine, "order_status_history")) == 4


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_an_older_deletion_still_deletes(db: Any, delivery: str) -> None:
    events = [
        order_event("evt_new", updated_at=9, status="closed"),
        order_event("evt_del", updated_at=4, type="order.deleted", status="archived"),
    ]
    apply_as(db.engine, events, delivery)
    row = order_row(db.engine)
    assert (row["deleted"], row["status"], row["last_event_id"]) == (True, "closed", "evt_new")


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_a_sparse_deletion_before_or_after_the_order(db: Any, delivery: str) -> None:
    events = [
        sparse_delete("evt_del", "order", "ord_1", created_at=30),
        order_event("evt_1", updated_at=1, total="250.50"),
    ]
    apply_as(db.engine, events, delivery)
    row = order_row(db.engine)
    assert (row["deleted"], row["total"], row["last_event_id"]) == (True, D("250.50"), "evt_1")
    assert len(rows(db.engine, "order_line_items")) == 1
    assert event_status(db.engine, "evt_del") == ("applied", None)


@pytest.mark.parametrize("delivery", DELIVERIES)
def test_customer_deletion_is_a_sticky_soft_delete(db: Any, delivery: str) -> None:
    events = [
        customer_event("evt_1", updated_at=1),
        sparse_delete("evt_2", "customer", "cus_1", created_at=2),
        customer_event("evt_3", updated_at=3, first_name="Reaparece"),
        customer_event("evt_4", updated_at=4, type="customer.deleted", first_name="Borrada"),
        customer_event("evt_5", updated_at=5, first_name="Otra vez"),
    ]
    apply_as(db.engine, events, delivery)
    row = customer_row(db.engine)
    assert (row["deleted"], row["first_name"]) == (True, "Otra vez")
    # A nested snapshot in an order does not undelete the customer either.
    deliver(db.engine, order_event("evt_o", updated_at=50, customer=customer_data(updated_at=50)))
    apply_all(db.engine)
    assert customer_row(db.engine)["deleted"] is True


def test_deleted_rows_are_never_removed(db: Any) -> None:
    deliver(db.engine, order_event("evt_1", updated_at=1), customer_event("evt_2", updated_at=1))
    deliver(db.engine, sparse_delete("evt_3", "order", "ord_1", created_at=5))
    deliver(db.engine, sparse_delete("evt_4", "customer", "cus_1", created_at=5))
    apply_all(db.engine, limit=1)
    assert [row["deleted"] for row in rows(db.engine, "orders")] == [True]
    assert [row["deleted"] for row in rows(db.engine, "customers")] == [True]
    assert len(rows(db.engine, "order_line_items")) == 1
    assert len(rows(db.engine, "customer_addresses")) == 1


def test_unknown_and_ignored_types_are_stored_and_ignored(db: Any) -> None:
    deliver(
        db.engine,
        envelope("evt_1", "fulfillment.created", 0, {"id": "ful_1"}),
        envelope("evt_2", "checkout.updated", 0, {"id": "chk_1"}),
        envelope("evt_3", "order.exploded", 0, order_data()),
        order_event("evt_4"),
    )
    report = apply_all(db.engine)
    assert (report.applied, report.ignored) == (1, 3)
    assert event_status(db.engine, "evt_1") == ("ignored", "event type not normalized")
    assert event_status(db.engine, "evt_2") == ("ignored", "abandoned checkouts are not normalized")
    assert event_status(db.engine, "evt_3") == ("ignored", "event type not normalized")
    assert [row["last_event_id"] for row in rows(db.engine, "orders")] == ["evt_4"]
    assert [row["event_id"] for row in rows(db.engine, "order_status_history")] == ["evt_4"]


def test_an_empty_list_of_tags_is_null(db: Any) -> None:
    deliver(
        db.engine,
        order_event("evt_1", order_id="ord_1", tags=[], customer=customer_data(tags=[" ", None])),
        order_event("evt_2", order_id="ord_2", tags=[" vip ", "", None, "web"]),
        customer_event("evt_3", customer_id="cus_3", tags=["", "  "]),
    )
    assert apply_all(db.engine).applied == 3
    assert [(row["id"], row["tags"]) for row in rows(db.engine, "orders")] == [
        ("ord_1", None),
        ("ord_2", "vip, web"),
    ]
    assert [(row["id"], row["tags"]) for row in rows(db.engine, "customers")] == [
        ("cus_1", None),
        ("cus_3", None),
    ]
    with db.engine.connect() as conn:
        blank = conn.execute(text("SELECT COUNT(*) FROM orders WHERE tags = ''")).scalar_one()
    assert blank == 0


MALFORMED: dict[str, tuple[dict[str, Any], str]] = {
    "comma decimal": ({"total": "12,50"}, "data.total"),
    "letters for money": ({"subtotal": "abc"}, "data.subtotal"),
    "bad timestamp": ({"updated_at": "27/11/2026 18:04"}, "data.updated_at"),
    "bad nested money": ({"line_items": [line_item("li_1") | {"price": "1O0.00"}]}, "price"),
    "float nan": ({"total_tax": "NaN"}, "data.total_tax"),
    "year past 9999 in UTC": ({"closed_at": "9999-12-31T23:00:00-06:00"}, "data.closed_at"),
    "year before 1 in UTC": ({"created_at": "0001-01-01T00:00:00+06:00"}, "data.created_at"),
}


def test_malformed_events_fail_alone_in_one_batch(db: Any) -> None:
    good = [private_order("evt_good_1"), private_order("evt_good_2", total="99.90")]
    bad = {
        f"evt_bad_{index}": private_order(f"evt_bad_{index}", **changes)
        for index, (changes, _) in enumerate(MALFORMED.values())
    }
    deliver(db.engine, good[0], *bad.values(), good[1])

    report = apply_pending(db.engine, STORE, limit=100, max_attempts=3)  # one batch

    assert (report.applied, report.failed) == (2, len(MALFORMED))
    assert sorted(row["id"] for row in rows(db.engine, "orders")) == [
        "ord_evt_good_1",
        "ord_evt_good_2",
    ]
    assert order_row(db.engine, "ord_evt_good_2")["total"] == D("99.90")
    for event_id, (_, field) in zip(bad, MALFORMED.values(), strict=True):
        status, error = event_status(db.engine, event_id)
        assert status == "failed"
        assert error is not None and field in error, error
        assert not any(bit in error for bit in SECRET_BITS), error
    history_ids = {row["event_id"] for row in rows(db.engine, "order_status_history")}
    assert history_ids == {"evt_good_1", "evt_good_2"}


def test_a_malformed_envelope_is_kept_and_fails_alone(db: Any) -> None:
    bad_time = order_event("evt_1", order_id="ord_1") | {"created_at": "2026-13-45T99:00:00"}
    bad_data = envelope("evt_2", "customer.updated", 0, {}) | {"data": "cus_1"}
    deliver(db.engine, bad_time, bad_data, order_event("evt_3", order_id="ord_3"))
    report = apply_pending(db.engine, STORE, limit=10, max_attempts=3)
    assert (report.applied, report.failed) == (1, 2)
    assert event_status(db.engine, "evt_1") == ("failed", "created_at: not an ISO 8601 timestamp")
    assert event_status(db.engine, "evt_2") == ("failed", "data: expected an object")
    assert [row["id"] for row in rows(db.engine, "orders")] == ["ord_3"]


def test_a_malformed_nested_customer_names_its_field(db: Any) -> None:
    buyer = customer_data("cus_9", total_spent="mil pesos", first_name="Ximena")
    deliver(db.engine, order_event("evt_1", customer=buyer), customer_event("evt_2"))
    apply_all(db.engine)
    status, error = event_status(db.engine, "evt_1")
    assert status == "failed"
    assert error == "data.customer.total_spent: not a decimal amount"
    assert event_status(db.engine, "evt_2") == ("applied", None)
    assert rows(db.engine, "orders") == []


def test_values_a_column_cannot_hold_fail_at_once_on_every_database(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A string longer than its column or a whole number past INTEGER / BIGINT is
    refused by the parser, the same way everywhere (SQLite would store it,
    PostgreSQL and MariaDB would refuse the write): the event fails at once,
    naming the field, and the database is never asked to hold it."""
    too_much = {
        "evt_status": (
            order_event("evt_status", order_id="ord_1", status="x" * 33),
            "data.status: longer than 32 characters",
        ),
        "evt_currency": (
            order_event("evt_currency", order_id="ord_2", currency="MXNN"),
            "data.currency: longer than 3 characters",
        ),
        "evt_number": (
            order_event("evt_number", order_id="ord_3", number=2**63),
            "data.number: out of range",
        ),
        "evt_id": (
            order_event("evt_id", order_id="o" * 129),
            "data.id: longer than 128 characters",
        ),
        "evt_quantity": (
            order_event(
                "evt_quantity", order_id="ord_4", line_items=[line_item("li_1", quantity=2**31)]
            ),
            "data.line_items[0].quantity: out of range",
        ),
        "evt_negative": (
            order_event(
                "evt_negative",
                order_id="ord_5",
                line_items=[line_item("li_1"), line_item("li_2", quantity=-(2**31) - 1)],
            ),
            "data.line_items[1].quantity: out of range",
        ),
        "evt_sku": (
            order_event(
                "evt_sku", order_id="ord_6", line_items=[line_item("li_1", sku="😀" * 256)]
            ),
            "data.line_items[0].sku: longer than 255 characters",
        ),
        "evt_zip": (
            order_event("evt_zip", order_id="ord_7", billing_address=address(zip="0" * 33)),
            "data.billing_address.zip: longer than 32 characters",
        ),
        "evt_nested": (
            order_event("evt_nested", order_id="ord_8", customer=customer_data(orders_count=2**31)),
            "data.customer.orders_count: out of range",
        ),
        "evt_nested_address": (
            order_event(
                "evt_nested_address",
                order_id="ord_9",
                customer=customer_data(
                    addresses=[
                        {"id": "adr_1", "default": True, **address(country_code="MX-CMX-1")},
                        {"id": "adr_2", "default": False, **address(country_code="MX-CMX-12")},
                    ]
                ),
            ),
            "data.customer.addresses[1].country_code: longer than 8 characters",
        ),
        "evt_customer": (
            customer_event("evt_customer", customer_id="cus_2", first_name="ñ" * 256),
            "data.first_name: longer than 255 characters",
        ),
    }
    # The same columns filled to the brim: stored and read back as sent.
    brim = order_event(
        "evt_brim",
        order_id="o" * 128,
        status="ñ" * 32,
        currency="MXN",
        number=2**63 - 1,
        email="é" * 320,
        line_items=[
            line_item("li_1", quantity=2**31 - 1, sku="😀" * 255),
            line_item("li_2", quantity=-(2**31)),
        ],
        billing_address=address(zip="0" * 32),
        customer=customer_data(
            orders_count=2**31 - 1,
            first_name="ñ" * 255,
            addresses=[{"id": "a" * 128, "default": True, **address(country_code="MX-CMX-1")}],
        ),
    )
    low = order_event("evt_low", order_id="ord_low", number=-(2**63))
    deliver(db.engine, brim, *(event for event, _ in too_much.values()), low)

    report = apply_pending(db.engine, STORE, limit=100, max_attempts=3)  # one batch

    assert (report.applied, report.failed, report.retried) == (2, len(too_much), 0)
    assert "apply.batch_failed" not in caplog.text  # the batch was written at once
    events = {e["id"]: e for e in rows(db.engine, "events")}
    for event_id, (_, error) in too_much.items():
        assert (events[event_id]["status"], events[event_id]["attempts"]) == ("failed", 1)
        assert events[event_id]["last_error"] == error
    assert sorted(row["id"] for row in rows(db.engine, "orders")) == ["o" * 128, "ord_low"]
    assert [row["id"] for row in rows(db.engine, "customers")] == ["cus_1"]
    order = order_row(db.engine, "o" * 128)
    assert (order["status"], order["number"], order["email"]) == ("ñ" * 32, 2**63 - 1, "é" * 320)
    assert order_row(db.engine, "ord_low")["number"] == -(2**63)
    items = rows(db.engine, "order_line_items")
    assert [(i["order_id"], i["id"], i["quantity"], i["sku"]) for i in items] == [
        ("o" * 128, "li_1", 2**31 - 1, "😀" * 255),
        ("o" * 128, "li_2", -(2**31), "SKU-li_2"),
        ("ord_low", "li_1", 1, "SKU-li_1"),
    ]
    customer = customer_row(db.engine)
    assert (customer["orders_count"], customer["first_name"]) == (2**31 - 1, "ñ" * 255)
    [saved] = rows(db.engine, "customer_addresses")
    assert (saved["id"], saved["country_code"]) == ("a" * 128, "MX-CMX-1")
    [billing] = [a for a in rows(db.engine, "order_addresses") if a["kind"] == "billing"]
    assert billing["zip"] == "0" * 32


# --- 3. property: delivery order, duplicates and batching do not matter ------------------------

ORDER_IDS = ("ord_a", "ord_b")
CUSTOMER_IDS = ("cus_a", "cus_b")
MINUTES = st.integers(0, 2)  # few distinct seconds: ties happen often
AMOUNTS = st.sampled_from(["0.10", "0.20", "19.99", "100", "1234.56", 12.5, 7])


@st.composite
def nested_customers(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    return customer_data(
        draw(st.sampled_from(CUSTOMER_IDS)),
        updated_at=draw(MINUTES),
        first_name=draw(st.sampled_from(["Ana", "Beto", "Ñoño"])),
        total_spent=draw(AMOUNTS),
        addresses=[
            {"id": f"adr_{n}", "default": n == 1, **address(city=draw(st.sampled_from("ABC")))}
            for n in range(draw(st.integers(0, 2)))
        ],
    )


@st.composite
def some_event(draw: st.DrawFn, index: int) -> dict[str, Any]:
    # The id's first part is random so that id order is unrelated to anything else.
    event_id = f"evt_{draw(st.integers(0, 9))}_{index:02d}"
    kind = draw(st.sampled_from(["order", "order", "order", "customer", "sparse"]))
    updated, created = draw(MINUTES), draw(MINUTES)
    if kind == "sparse":
        resource = draw(st.sampled_from(["order", "customer"]))
        ids = ORDER_IDS if resource == "order" else CUSTOMER_IDS
        return sparse_delete(event_id, resource, draw(st.sampled_from(ids)), created)
    if kind == "customer":
        return customer_event(
            event_id,
            customer_id=draw(st.sampled_from(CUSTOMER_IDS)),
            updated_at=updated,
            created_at=created,
            type=draw(st.sampled_from(["customer.updated", "customer.deleted"])),
            first_name=draw(st.sampled_from(["Ana", "Beto", "Ñoño"])),
            total_spent=draw(AMOUNTS),
        )
    items = draw(st.lists(st.sampled_from(["li_1", "li_2", "li_3"]), unique=True, max_size=3))
    return order_event(
        event_id,
        order_id=draw(st.sampled_from(ORDER_IDS)),
        updated_at=updated,
        created_at=created,
        type=draw(st.sampled_from(["order.updated", "order.paid", "order.deleted"])),
        status=draw(st.sampled_from(["open", "closed"])),
        total=draw(AMOUNTS),
        customer=draw(nested_customers()),
        line_items=[line_item(i, quantity=draw(st.integers(1, 3))) for i in items],
        shipping_address=draw(st.sampled_from([None, address("Ana"), address("Beto")])),
        billing_address=draw(st.sampled_from([None, address("Ana", company="ACME")])),
    )


@st.composite
def event_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    return [draw(some_event(index)) for index in range(draw(st.integers(1, 10)))]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=event_sets(), data=st.data())
def test_any_delivery_order_gives_the_same_tables(
    db: Any, events: list[dict[str, Any]], data: st.DataObject
) -> None:
    write_batches(db, events, [[event] for event in chronological(events)])
    in_order = snapshot(db.engine)

    duplicates = data.draw(st.lists(st.sampled_from(events), max_size=4), label="duplicates")
    shuffled = data.draw(st.permutations(events + duplicates), label="delivery")
    batches = []
    while shuffled:
        size = data.draw(st.integers(1, len(shuffled)), label="batch size")
        batches.append(shuffled[:size])
        shuffled = shuffled[size:]
    write_batches(db, events, batches)

    assert snapshot(db.engine) == in_order
    # One history row per full order event, whichever version won.
    full_order_events = {
        e["id"] for e in events if e["type"].startswith("order.") and len(e["data"]) > 1
    }
    assert {row["event_id"] for row in in_order["order_status_history"]} == full_order_events
