"""Shoperti's wire format: JSON payloads into typed, validated records.

The only module that reads the keys of a Shoperti payload (docs/api.md §2). It is
tolerant where the platform varies — money as string or number, ids as
strings or numbers, naive timestamps meaning UTC, absent optional fields —
and strict where a wrong guess would corrupt data: a malformed amount or
timestamp raises :class:`WireError` instead of becoming NULL or a float.

It never touches the network or the database.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson

from syncd.errors import WireError

MAX_MONEY_DECIMALS = 4
MAX_MONEY_INTEGER_DIGITS = 15
_MONEY_LIMIT = Decimal(10) ** MAX_MONEY_INTEGER_DIGITS

ORDER_EVENTS = frozenset(
    {
        "order.created",
        "order.updated",
        "order.paid",
        "order.fulfilled",
        "order.cancelled",
        "order.refunded",
        "order.deleted",
    }
)
CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})
NORMALIZED_EVENTS = ORDER_EVENTS | CUSTOMER_EVENTS


# --- scalar readers -----------------------------------------------------------


def ident(value: Any, field: str) -> str | None:
    """An id: strings as they are, integers as text."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise WireError(f"{field}: expected an id, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    raise WireError(f"{field}: expected an id (string or integer)")


# The common spelling of an amount ("389.00"): within range and the allowed
# decimals as it stands, so nothing more needs checking.
_PLAIN_AMOUNT = re.compile(
    rf"-?[0-9]{{1,{MAX_MONEY_INTEGER_DIGITS}}}(?:\.[0-9]{{1,{MAX_MONEY_DECIMALS}}})?"
)


def money(value: Any, field: str) -> Decimal | None:
    """An exact amount from a decimal string or a JSON number."""
    if value.__class__ is str and _PLAIN_AMOUNT.fullmatch(value):
        return Decimal(value)
    return _amount(value, field)


def _amount(value: Any, field: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise WireError(f"{field}: expected an amount, got a boolean")
    try:
        if isinstance(value, float):
            amount = Decimal(repr(value))  # the shortest text that round-trips
        elif isinstance(value, int | str):
            amount = Decimal(str(value).strip())
        else:
            raise WireError(f"{field}: expected an amount")
    except InvalidOperation:
        raise WireError(f"{field}: not a decimal amount") from None
    if not amount.is_finite():
        raise WireError(f"{field}: not a finite amount")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_MONEY_DECIMALS:
        normalized = amount.normalize()
        norm_exp = normalized.as_tuple().exponent
        if isinstance(norm_exp, int) and norm_exp < -MAX_MONEY_DECIMALS:
            raise WireError(f"{field}: more than {MAX_MONEY_DECIMALS} decimal places")
        amount = normalized
    if not -_MONEY_LIMIT < amount < _MONEY_LIMIT:
        raise WireError(f"{field}: amount out of range")
    return amount


def timestamp(value: Any, field: str) -> datetime | None:
    """An ISO 8601 time as an aware UTC datetime; a naive time means UTC."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise WireError(f"{field}: expected an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise WireError(f"{field}: not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00-06:00 is past year 9999 in UTC
        raise WireError(f"{field}: timestamp out of range") from None


def integer(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise WireError(f"{field}: expected a whole number, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise WireError(f"{field}: expected a whole number")


def text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise WireError(f"{field}: expected text")


def flag(value: Any, field: str) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise WireError(f"{field}: expected true or false")


def tags(value: Any, field: str) -> str | None:
    """Tags as one comma-separated string (a list or a string on the wire)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        joined = ", ".join(
            str(tag).strip() for tag in value if tag is not None and str(tag).strip()
        )
        return joined or None
    raise WireError(f"{field}: expected a list of tags")


# The deepest JSON every database stores: MariaDB's JSON columns check
# ``json_valid``, which refuses more than 31 nested objects and lists
# (orjson, for the others, writes up to 254). Real payloads nest about 5 deep.
MAX_JSON_DEPTH = 31
_TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels cannot be stored"


def scrub_nul(value: Any) -> Any:
    """The payload with every NUL character (U+0000) replaced by U+FFFD.

    PostgreSQL's text and JSONB cannot hold U+0000; refusing such an event
    would have the platform retry it for two days and then drop it, so it is
    kept with the character replaced, the same way on every database.
    """
    return prepare(value)[0]


def prepare(value: Any) -> tuple[Any, str | None]:
    """A payload ready to store (NULs replaced, see :func:`scrub_nul`), and
    why it cannot be stored at all (None when it can): JSON nested deeper
    than :data:`MAX_JSON_DEPTH` levels."""
    if isinstance(value, Mapping | list):
        try:
            dumped: bytes | None = orjson.dumps(value)
        except (TypeError, orjson.JSONEncodeError):
            dumped = None  # too deep for orjson, or a huge integer (walked below)
        if dumped is None or dumped.count(b"[") + dumped.count(b"{") > MAX_JSON_DEPTH:
            reason = unstorable(value)  # fewer brackets than that cannot nest deeper
            if reason is not None:
                return value, reason
        if dumped is not None and b"\\u0000" not in dumped:
            return value, None  # the common case, found in C without a walk
    return _scrub(value), None


def unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be stored as JSON on every database, or None."""
    return _TOO_DEEP if json_depth(value) > MAX_JSON_DEPTH else None


def json_depth(value: Any) -> int:
    """How many objects and lists are nested in ``value`` at its deepest (0 for a scalar)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, Mapping | list))
    return deepest


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, Mapping):
        return {_scrub(key): _scrub(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    return value


def _object(value: Any, field: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise WireError(f"{field}: expected an object")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise WireError(f"{field}: expected a list")
    return value


# --- events -------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    created_at: datetime | None
    resource: str
    resource_id: str | None
    data: Mapping[str, Any] | None
    payload: Mapping[str, Any]
    # Why the event's JSON cannot be stored (then ``payload`` is its envelope alone).
    unstorable: str | None = None

    @property
    def normalized(self) -> bool:
        return self.type in NORMALIZED_EVENTS


def event_data(event: Event) -> Mapping[str, Any]:
    """The event's ``data``, the object it is about; a WireError when it has none."""
    if event.data is None:
        raise WireError("data: missing")
    return event.data


def bare_deletion(event: Event) -> str | None:
    """The id a deletion names when its ``data`` holds nothing else worth
    reading (``{"id": …}``, no ``updated_at``); None when ``data`` is a whole
    copy, of a deleted object or not, to be parsed as one. The two shapes a
    deletion comes in are told apart here, so no one else reads its keys."""
    data = event_data(event)
    if not event.type.endswith(".deleted") or "updated_at" in data:
        return None
    resource_id = ident(data.get("id"), "data.id")
    if resource_id is None:
        raise WireError("data.id: missing")
    return resource_id


def resource_of(event_type: str) -> str:
    """``order.paid`` → ``order``; an unknown type keeps its own prefix."""
    prefix = event_type.split(".", 1)[0].strip().lower()
    return prefix[:32] or "other"


def parse_event(payload: Any) -> Event:
    """An Event object (webhook body or API copy). Checks the envelope only."""
    return _parse_event(payload, strict=True)


def parse_envelope(payload: Any) -> Event:
    """What the inbox needs to keep an event: a JSON object with an id and a type.

    A malformed ``created_at`` or ``data`` reads as NULL here instead of
    refusing the event: the inbox keeps it (refused, the platform would retry
    it for two days and then drop it, and reconcile would stall on it), and
    applying it fails it alone, with the reason, through :func:`parse_event`.
    """
    return _parse_event(payload, strict=False)


def parse_fetched(payload: Any) -> Event:
    """An event read from the API, as the inbox keeps it (:func:`parse_envelope`),
    NULs replaced; one whose JSON cannot be stored keeps only its envelope
    and says why in ``unstorable``."""
    prepared, reason = prepare(payload)
    event = parse_envelope(prepared)
    if reason is None:
        return event
    envelope = {key: prepared.get(key) for key in ("id", "object", "type", "created_at")}
    return dataclasses.replace(event, data=None, payload=envelope, unstorable=reason)


def _parse_event(payload: Any, *, strict: bool) -> Event:
    if not isinstance(payload, Mapping):
        raise WireError("body is not a JSON object")
    event_id = ident(payload.get("id"), "id")
    if event_id is None:
        raise WireError("event has no id")
    if len(event_id) > 128:
        raise WireError("id: longer than 128 characters")
    event_type = payload.get("type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise WireError("event has no type")
    event_type = event_type.strip()
    if len(event_type) > 64:
        raise WireError("type: longer than 64 characters")
    data: Mapping[str, Any] | None = None
    created_at: datetime | None = None
    try:
        data = _object(payload.get("data"), "data")
    except WireError:
        if strict:
            raise
    try:
        created_at = timestamp(payload.get("created_at"), "created_at")
    except WireError:
        if strict:
            raise
    resource_id = None
    if data is not None:
        try:
            resource_id = ident(data.get("id"), "data.id")
        except WireError:
            resource_id = None
    if resource_id is not None and len(resource_id) > 128:
        resource_id = None
    return Event(
        id=event_id,
        type=event_type,
        created_at=created_at,
        resource=resource_of(event_type),
        resource_id=resource_id,
        data=data,
        payload=payload,
    )


def snapshot_event(
    resource: str, data: Mapping[str, Any], read_at: datetime, *, distinct: bool = False
) -> dict[str, Any]:
    """An Event object standing for one copy of a resource that syncd read
    from the API (a list page of resource sync or backfill, or a single
    fetch), at ``read_at`` (when the request was sent: the copy is at least
    as new as that).

    Its id is derived from the resource and its whole content, so reading the
    same copy twice yields the same event, which the inbox keeps once, and
    two different copies never share an id — even when they carry the same
    whole-second ``updated_at``. Its ``created_at`` is ``read_at``: the
    version order (docs/apply-rules.md) compares it with the platform's
    event times, never the id. ``distinct``: the read time is part of the id
    too, so a copy read to settle a tie is applied even when the same
    content was read before, earlier (then it may have lost).
    """
    if resource not in ("order", "customer"):
        raise ValueError(f"no snapshot events for {resource!r}")
    resource_id = ident(data.get("id"), f"{resource}.id")
    if resource_id is None:
        raise WireError(f"{resource} without an id")
    deleted = _deleted(data)
    try:
        content = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        # Cannot be stored (too deep): one id per version, from what can be read.
        content = f"unstorable\0{data.get('updated_at')}".encode()
    if distinct:
        content += f"\0{read_at.isoformat()}".encode()
    digest = hashlib.sha256(f"{resource}\0{resource_id}\0".encode() + content)
    return {
        "id": f"snap_{digest.hexdigest()[:32]}",
        "object": "event",
        "type": f"{resource}.{'deleted' if deleted else 'updated'}",
        "created_at": read_at.astimezone(UTC).isoformat(),
        "data": dict(data),
    }


# --- resources -----------------------------------------------------------------


@dataclass(frozen=True)
class Address:
    first_name: str | None
    last_name: str | None
    company: str | None
    address1: str | None
    address2: str | None
    city: str | None
    province: str | None
    zip: str | None
    country_code: str | None
    phone: str | None

    def columns(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ADDRESS_FIELDS}


ADDRESS_FIELDS = tuple(field.name for field in fields(Address))  # in the order Address takes


def parse_address(value: Any, field: str) -> Address | None:
    obj = _object(value, field)
    if obj is None:
        return None
    values = [obj.get(name) for name in ADDRESS_FIELDS]
    for index, item in enumerate(values):
        if item is not None and item.__class__ is not str:  # most are text already
            values[index] = text(item, f"{field}.{ADDRESS_FIELDS[index]}")
    return Address(*values)


@dataclass(frozen=True)
class CustomerAddress:
    id: str
    is_default: bool
    address: Address


@dataclass(frozen=True)
class Customer:
    id: str
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    accepts_marketing: bool | None
    orders_count: int | None
    total_spent: Decimal | None
    tags: str | None
    addresses: tuple[CustomerAddress, ...]
    created_at: datetime | None
    updated_at: datetime | None
    deleted: bool
    raw: Mapping[str, Any]


def parse_customer(value: Any, field: str = "customer") -> Customer:
    obj = _object(value, field)
    if obj is None:
        raise WireError(f"{field}: missing")
    customer_id = ident(obj.get("id"), f"{field}.id")
    if customer_id is None:
        raise WireError(f"{field}.id: missing")
    addresses = []
    for index, item in enumerate(_list(obj.get("addresses"), f"{field}.addresses")):
        where = f"{field}.addresses[{index}]"
        address = parse_address(item, where)
        if address is None:
            continue
        address_id = ident(item.get("id"), f"{where}.id") or str(index + 1)
        is_default = bool(flag(item.get("default"), f"{where}.default"))
        addresses.append(CustomerAddress(address_id, is_default, address))
    return Customer(
        id=customer_id,
        email=text(obj.get("email"), f"{field}.email"),
        first_name=text(obj.get("first_name"), f"{field}.first_name"),
        last_name=text(obj.get("last_name"), f"{field}.last_name"),
        phone=text(obj.get("phone"), f"{field}.phone"),
        accepts_marketing=flag(obj.get("accepts_marketing"), f"{field}.accepts_marketing"),
        orders_count=integer(obj.get("orders_count"), f"{field}.orders_count"),
        total_spent=money(obj.get("total_spent"), f"{field}.total_spent"),
        tags=tags(obj.get("tags"), f"{field}.tags"),
        addresses=tuple(addresses),
        created_at=timestamp(obj.get("created_at"), f"{field}.created_at"),
        updated_at=timestamp(obj.get("updated_at"), f"{field}.updated_at"),
        deleted=_deleted(obj),
        raw=obj,
    )


@dataclass(frozen=True)
class LineItem:
    id: str
    product_id: str | None
    variant_id: str | None
    sku: str | None
    title: str | None
    variant_title: str | None
    quantity: int | None
    price: Decimal | None
    total_discount: Decimal | None
    total: Decimal | None


# The records of an order's lists are named tuples: an order may carry dozens
# of them, and a tuple is built several times faster than a frozen dataclass.


class Transaction(NamedTuple):
    """A money movement as the payment gateway reported it."""

    id: str
    kind: str | None
    status: str | None
    gateway: str | None
    payment_method: str | None
    amount: Decimal | None
    currency: str | None
    authorization: str | None
    error_code: str | None
    created_at: datetime | None
    processed_at: datetime | None


class RefundLineItem(NamedTuple):
    line_item_id: str
    quantity: int | None
    amount: Decimal | None


class Refund(NamedTuple):
    id: str
    created_at: datetime | None
    note: str | None
    amount: Decimal | None
    restock: bool | None
    line_items: tuple[RefundLineItem, ...]


class FulfillmentLineItem(NamedTuple):
    line_item_id: str
    quantity: int | None


class Fulfillment(NamedTuple):
    id: str
    status: str | None
    tracking_company: str | None
    tracking_number: str | None
    tracking_url: str | None
    created_at: datetime | None
    updated_at: datetime | None
    line_items: tuple[FulfillmentLineItem, ...]


class DiscountCode(NamedTuple):
    code: str
    type: str | None
    amount: Decimal | None


@dataclass(frozen=True)
class Order:
    id: str
    number: int | None
    status: str | None
    financial_status: str | None
    fulfillment_status: str | None
    currency: str | None
    subtotal: Decimal | None
    total_discounts: Decimal | None
    total_tax: Decimal | None
    total_shipping: Decimal | None
    total: Decimal | None
    email: str | None
    customer: Customer | None
    note: str | None
    tags: str | None
    line_items: tuple[LineItem, ...]
    transactions: tuple[Transaction, ...]
    refunds: tuple[Refund, ...]
    fulfillments: tuple[Fulfillment, ...]
    discount_codes: tuple[DiscountCode, ...]
    shipping_address: Address | None
    billing_address: Address | None
    created_at: datetime | None
    updated_at: datetime | None
    cancelled_at: datetime | None
    closed_at: datetime | None
    deleted: bool
    raw: Mapping[str, Any]


def parse_order(value: Any, field: str = "order") -> Order:
    obj = _object(value, field)
    if obj is None:
        raise WireError(f"{field}: missing")
    order_id = ident(obj.get("id"), f"{field}.id")
    if order_id is None:
        raise WireError(f"{field}.id: missing")
    nested = obj.get("customer")
    currency = text(obj.get("currency"), f"{field}.currency")
    return Order(
        id=order_id,
        number=integer(obj.get("number"), f"{field}.number"),
        status=text(obj.get("status"), f"{field}.status"),
        financial_status=text(obj.get("financial_status"), f"{field}.financial_status"),
        fulfillment_status=text(obj.get("fulfillment_status"), f"{field}.fulfillment_status"),
        currency=currency.upper() if currency else None,
        subtotal=money(obj.get("subtotal"), f"{field}.subtotal"),
        total_discounts=money(obj.get("total_discounts"), f"{field}.total_discounts"),
        total_tax=money(obj.get("total_tax"), f"{field}.total_tax"),
        total_shipping=money(obj.get("total_shipping"), f"{field}.total_shipping"),
        total=money(obj.get("total"), f"{field}.total"),
        email=text(obj.get("email"), f"{field}.email"),
        customer=parse_customer(nested, f"{field}.customer") if nested else None,
        note=text(obj.get("note"), f"{field}.note"),
        tags=tags(obj.get("tags"), f"{field}.tags"),
        line_items=parse_line_items(obj.get("line_items"), f"{field}.line_items"),
        transactions=parse_transactions(obj.get("transactions"), f"{field}.transactions"),
        refunds=parse_refunds(obj.get("refunds"), f"{field}.refunds"),
        fulfillments=parse_fulfillments(obj.get("fulfillments"), f"{field}.fulfillments"),
        discount_codes=parse_discount_codes(obj.get("discount_codes"), f"{field}.discount_codes"),
        shipping_address=parse_address(obj.get("shipping_address"), f"{field}.shipping_address"),
        billing_address=parse_address(obj.get("billing_address"), f"{field}.billing_address"),
        created_at=timestamp(obj.get("created_at"), f"{field}.created_at"),
        updated_at=timestamp(obj.get("updated_at"), f"{field}.updated_at"),
        cancelled_at=timestamp(obj.get("cancelled_at"), f"{field}.cancelled_at"),
        closed_at=timestamp(obj.get("closed_at"), f"{field}.closed_at"),
        deleted=_deleted(obj),
        raw=obj,
    )


def same_content(a: Order | Customer, b: Order | Customer) -> bool:
    """Whether two parsed copies say the same thing about themselves, however
    each spelled it (money as string or number, time zones, key order):
    ``raw`` aside, and of an order's nested customer only which one it is
    (the customer is its own resource, with its own versions)."""
    return _content(a) == _content(b)


def _content(item: Order | Customer) -> tuple[Order | Customer, str | None]:
    if isinstance(item, Order):
        customer = item.customer.id if item.customer is not None else None
        return dataclasses.replace(item, raw={}, customer=None), customer
    return dataclasses.replace(item, raw={}), None


def _deleted(obj: Mapping[str, Any]) -> bool:
    return bool(obj.get("deleted")) or obj.get("deleted_at") not in (None, "")


# --- the order's money and shipping lists ----------------------------------------
#
# Each list may be absent or null (empty). An entry without an id takes its
# place in the list (from 1) as id, as line items do. A list that names the
# same id twice (or a refund or fulfillment that names the same line item
# twice, or an order the same discount code twice) is refused with a reason
# naming the list: the entries cannot both be right, and keeping either one
# would count money or units once where the store counted them twice (or the
# other way round). The event fails alone and stays in the inbox to replay.


def _entries(value: Any, field: str) -> list[tuple[str, Mapping[str, Any]]]:
    entries = []
    for index, item in enumerate(_list(value, field)):
        where = f"{field}[{index}]"
        if not isinstance(item, Mapping):
            raise WireError(f"{where}: expected an object")
        entries.append((where, item))
    return entries


def _unique(keys: list[str], field: str, what: str = "id") -> None:
    if len(set(keys)) != len(keys):
        raise WireError(f"{field}: the same {what} appears twice")


# Readers of one field of an entry: the common spellings (text that is text,
# a plain amount, an ISO time) are read at once, the rest by the general
# readers above, which name the field in their errors. The field's name is
# only built for those: most entries never need it.


def _text_at(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None or value.__class__ is str:
        return value
    return text(value, f"{where}.{key}")


def _money_at(item: Mapping[str, Any], key: str, where: str) -> Decimal | None:
    value = item.get(key)
    if value.__class__ is str and _PLAIN_AMOUNT.fullmatch(value):
        return Decimal(value)
    return _amount(value, f"{where}.{key}")


def _time_at(item: Mapping[str, Any], key: str, where: str) -> datetime | None:
    value = item.get(key)
    if value is None:
        return None
    if value.__class__ is str:
        try:
            parsed = datetime.fromisoformat(value)
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # the general reader says what is wrong
    return timestamp(value, f"{where}.{key}")


def _id_at(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value.__class__ is str:
        return value.strip() or None
    return ident(value, f"{where}.{key}")


def _entry_id(item: Mapping[str, Any], where: str, index: int) -> str:
    return _id_at(item, "id", where) or str(index + 1)


def parse_line_items(value: Any, field: str) -> tuple[LineItem, ...]:
    found = []
    for index, (where, item) in enumerate(_entries(value, field)):
        found.append(
            LineItem(
                id=_entry_id(item, where, index),
                product_id=_id_at(item, "product_id", where),
                variant_id=_id_at(item, "variant_id", where),
                sku=_text_at(item, "sku", where),
                title=_text_at(item, "title", where),
                variant_title=_text_at(item, "variant_title", where),
                quantity=_quantity_at(item, where),
                price=_money_at(item, "price", where),
                total_discount=_money_at(item, "total_discount", where),
                total=_money_at(item, "total", where),
            )
        )
    _unique([entry.id for entry in found], field)
    return tuple(found)


def parse_transactions(value: Any, field: str) -> tuple[Transaction, ...]:
    if value is None or value == []:
        return ()
    found = []
    for index, (where, item) in enumerate(_entries(value, field)):
        currency = _text_at(item, "currency", where)
        found.append(
            Transaction(
                id=_entry_id(item, where, index),
                kind=_text_at(item, "kind", where),
                status=_text_at(item, "status", where),
                gateway=_text_at(item, "gateway", where),
                payment_method=_text_at(item, "payment_method", where),
                amount=_money_at(item, "amount", where),
                currency=currency.upper() if currency else None,
                authorization=_text_at(item, "authorization", where),
                error_code=_text_at(item, "error_code", where),
                created_at=_time_at(item, "created_at", where),
                processed_at=_time_at(item, "processed_at", where),
            )
        )
    _unique([entry.id for entry in found], field)
    return tuple(found)


def _line_item_id(item: Mapping[str, Any], where: str) -> str:
    line_item_id = _id_at(item, "line_item_id", where)
    if line_item_id is None:
        raise WireError(f"{where}.line_item_id: missing")
    return line_item_id


def _quantity_at(item: Mapping[str, Any], where: str) -> int | None:
    value = item.get("quantity")
    if value.__class__ is int:
        return value
    return integer(value, f"{where}.quantity")


def parse_refunds(value: Any, field: str) -> tuple[Refund, ...]:
    if value is None or value == []:
        return ()
    found = []
    for index, (where, item) in enumerate(_entries(value, field)):
        lines = [
            RefundLineItem(
                line_item_id=_line_item_id(line, at),
                quantity=_quantity_at(line, at),
                amount=_money_at(line, "amount", at),
            )
            for at, line in _entries(item.get("line_items"), f"{where}.line_items")
        ]
        _unique([line.line_item_id for line in lines], f"{where}.line_items", "line_item_id")
        found.append(
            Refund(
                id=_entry_id(item, where, index),
                created_at=_time_at(item, "created_at", where),
                note=_text_at(item, "note", where),
                amount=_money_at(item, "amount", where),
                restock=flag(item.get("restock"), f"{where}.restock"),
                line_items=tuple(lines),
            )
        )
    _unique([entry.id for entry in found], field)
    return tuple(found)


def parse_fulfillments(value: Any, field: str) -> tuple[Fulfillment, ...]:
    if value is None or value == []:
        return ()
    found = []
    for index, (where, item) in enumerate(_entries(value, field)):
        lines = [
            FulfillmentLineItem(
                line_item_id=_line_item_id(line, at), quantity=_quantity_at(line, at)
            )
            for at, line in _entries(item.get("line_items"), f"{where}.line_items")
        ]
        _unique([line.line_item_id for line in lines], f"{where}.line_items", "line_item_id")
        found.append(
            Fulfillment(
                id=_entry_id(item, where, index),
                status=_text_at(item, "status", where),
                tracking_company=_text_at(item, "tracking_company", where),
                tracking_number=_text_at(item, "tracking_number", where),
                tracking_url=_text_at(item, "tracking_url", where),
                created_at=_time_at(item, "created_at", where),
                updated_at=_time_at(item, "updated_at", where),
                line_items=tuple(lines),
            )
        )
    _unique([entry.id for entry in found], field)
    return tuple(found)


def parse_discount_codes(value: Any, field: str) -> tuple[DiscountCode, ...]:
    if value is None or value == []:
        return ()
    found = []
    for where, item in _entries(value, field):
        code = _text_at(item, "code", where)
        if code is None or not code.strip():
            raise WireError(f"{where}.code: missing")
        found.append(
            DiscountCode(
                code=code.strip(),
                type=_text_at(item, "type", where),
                amount=_money_at(item, "amount", where),
            )
        )
    _unique([entry.code for entry in found], field, "code")
    return tuple(found)
