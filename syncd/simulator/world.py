"""The simulated store's data: customers, orders, and the events their changes emit.

Pure and deterministic: every decision comes from the seed, every timestamp from the
clock value passed in. No I/O, no asyncio, and nothing from the rest of syncd: the
simulator is an honest stand-in that only speaks Shoperti's wire format as JSON.

Conventions the payloads follow (see also the package docstring):

- Money is computed in ``Decimal`` with two places. A line's ``total`` is
  ``price * quantity - total_discount``; ``subtotal`` is the sum of line totals;
  ``total_discounts`` holds order-level discounts only (coupons; line discounts are
  already inside the line totals); ``total_tax`` is 16 % IVA of
  ``subtotal - total_discounts`` rounded half-up to the cent (shipping is quoted
  with tax included); ``total = subtotal - total_discounts + total_tax + total_shipping``.
  Each payload renders its money either as strings (``"1160.00"``) or as JSON
  numbers (``1160.0`` or ``1160``); both denote the same amount exactly.
  ``total_discounts`` is also the sum of the order's ``discount_codes`` amounts
  (a percentage code and sometimes a fixed-amount code).
- Payments (``transactions``): card (conekta, openpay, mercadopago; a quarter of
  them declined once before the sale succeeds), OXXO vouchers (a ``pending``
  sale from checkout, ``success`` when paid, ``expired`` when the order is
  cancelled unpaid), SPEI transfers and PayPal. Every succeeded sale is the
  order's total. Refunds (``refunds``, each with a ``refund`` transaction) are
  partial (some units of one line, tax included) or full (what is left), and
  never add up to more than was paid. Fulfillments carry tracking, and about a
  quarter of shipped orders go out in two shipments (``partial`` in between).
- Timestamps are whole seconds with the Mexico City offset (``-06:00``); a few
  payloads carry naive timestamps, which denote UTC.
- Deletions: the ``*.deleted`` event carries the resource as it was, with
  ``"deleted": true`` and ``updated_at`` set to the deletion time; the truth keeps
  that tombstone.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal, TypeVar

import orjson

JSON = dict[str, Any]
T = TypeVar("T")

MEXICO_CITY = timezone(timedelta(hours=-6), "America/Mexico_City")
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
TAX_RATE = Decimal("0.16")
FREE_SHIPPING_FROM = Decimal("999.00")

ORDER_EVENT_TYPES = (
    "order.created",
    "order.updated",
    "order.paid",
    "order.fulfilled",
    "order.cancelled",
    "order.refunded",
    "order.deleted",
)
CUSTOMER_EVENT_TYPES = ("customer.created", "customer.updated", "customer.deleted")
UNKNOWN_EVENT_TYPES = ("product.updated",)


@dataclass(frozen=True, slots=True)
class Quirks:
    """How the platform formats what it says; none of these is a fault.

    The first three shape payloads (and so are part of a seeded run); the rest shape
    API answers.
    """

    naive_timestamp_rate: float = 0.02
    """Fraction of payloads whose timestamps are naive (meaning UTC)."""
    numeric_money_rate: float = 0.3
    """Fraction of payloads whose money amounts are JSON numbers instead of strings."""
    unknown_event_rate: float = 0.01
    """Chance per selling step of an event type syncd does not know (``product.updated``)."""
    omit_links: bool = False
    """Leave ``meta.pagination.links`` out, so clients must page by number."""
    single_objects: Literal["bare", "wrapped", "random"] = "random"
    """``bare``, ``wrapped`` (``{"data": {...}}``) or ``random`` per request."""
    deleted_by_id: Literal["404", "tombstone"] = "404"
    """``GET /orders/{id}`` of a deleted resource: ``404``, or ``tombstone`` (the object
    with ``"deleted": true``). Lists always include tombstones."""

    def __post_init__(self) -> None:
        if self.single_objects not in ("bare", "wrapped", "random"):
            raise ValueError("single_objects must be 'bare', 'wrapped' or 'random'")
        if self.deleted_by_id not in ("404", "tombstone"):
            raise ValueError("deleted_by_id must be '404' or 'tombstone'")


# --- formatting -------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def format_local(ts: int) -> str:
    """``2026-11-27T18:04:05-06:00``."""
    return datetime.fromtimestamp(ts, MEXICO_CITY).isoformat()


@functools.lru_cache(maxsize=1024)
def format_naive_utc(ts: int) -> str:
    """``2026-11-28T00:04:05``: the same instant, naive, meaning UTC."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat()


def parse_timestamp(text: str) -> float:
    """An ISO 8601 timestamp (offset, ``Z`` or naive meaning UTC) as epoch seconds."""
    cleaned = text.strip().replace(" ", "+")  # an unencoded "+" arrives as a space
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    moment = datetime.fromisoformat(cleaned)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def money_string(amount: Decimal) -> str:
    return str(amount)


def money_float(amount: Decimal) -> float:
    return float(amount)


def money_number(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


MoneyFormat = Callable[[Decimal], "str | int | float"]
TimeFormat = Callable[[int], str]


def _opt_time(fmt: TimeFormat, ts: int | None) -> str | None:
    return None if ts is None else fmt(ts)


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_B36_PAIRS = tuple(a + b for a in _B36 for b in _B36)


def _base36(number: int, width: int) -> str:
    """``number`` in ``width`` base-36 digits (``width`` even; higher digits dropped)."""
    pairs = []
    for _ in range(width // 2):
        number, rest = divmod(number, 1296)
        pairs.append(_B36_PAIRS[rest])
    pairs.reverse()
    return "".join(pairs)


_TIME_SHIFT = 36**16
_COUNTER_SHIFT = 36**12
_FINGERPRINT_SHIFT = 36**8


class FastRandom(random.Random):
    """``random.Random`` plus ``pick``, a cheaper ``choice`` (the generator calls it a lot)."""

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.random() * len(seq))]

    def few(self, population: Sequence[T], most: int) -> list[T]:
        """Up to ``most`` distinct items, zero to ``most`` of them, fewer more likely."""
        count = int(self.random() * self.random() * (most + 1))
        return self.sample(population, count) if count else []


class IdFactory:
    """cuid-like ids (``c`` + time + counter + fingerprint + random, 25 characters).

    Everything, the "time" part included, comes from the seed, so runs repeat.
    """

    def __init__(self, seed: int, stream: str) -> None:
        self._rng = random.Random(f"syncd-simulator/{seed}/{stream}")
        self._fingerprint = self._rng.getrandbits(20) * _FINGERPRINT_SHIFT
        self._millis = 1_700_000_000_000 + self._rng.getrandbits(33)
        self._counter = 0
        self._getrandbits = self._rng.getrandbits

    def __call__(self) -> str:
        self._counter = (self._counter + 1) % 1_679_616
        self._millis += 1 + self._getrandbits(5)
        number = (
            self._millis * _TIME_SHIFT
            + self._counter * _COUNTER_SHIFT
            + self._fingerprint
            + self._getrandbits(41)
        )
        return "c" + _base36(number, 24)


# --- the catalog of names, places and products ---------------------------------------

FIRST_NAMES = (
    "José", "María", "Juan", "Guadalupe", "Luis", "Ana", "Sofía", "Jesús", "Verónica",
    "Alejandro", "Ximena", "Iñaki", "Begoña", "Martín", "Andrés", "Dolores", "Ramón",
    "Mónica", "Héctor", "Raúl", "Inés", "Germán", "Noé", "Zoé", "Fernanda", "Ángel",
    "Valentina", "Santiago", "Regina", "Emilio", "Lucía", "Joaquín", "Itzel", "Tonatiuh",
)  # fmt: skip
LAST_NAMES = (
    "Muñoz", "Peña", "Hernández", "García", "Martínez", "López", "González", "Pérez",
    "Rodríguez", "Sánchez", "Ramírez", "Cruz", "Gómez", "Núñez", "Ibáñez", "Orduña",
    "Castañeda", "Treviño", "Zúñiga", "Avendaño", "Díaz", "Vázquez", "Jiménez", "Xolalpa",
    "Cuauhtémoc", "Rentería", "de la O", "Montaño",
)  # fmt: skip
_ASCII = str.maketrans("áéíóúüñÁÉÍÓÚÜÑ ", "aeiouunAEIOUUN.")
EMAIL_DOMAINS = ("example.com", "example.mx", "correo.example", "example.com.mx")
COMPANIES = ("Ñandú Diseño S.A. de C.V.", "Papelería La Güera", "Taller Peñoles", "Café Tacuba")

# city, state, zip prefix, area code, neighbourhoods
CITIES = (
    ("Ciudad de México", "Ciudad de México", "0", "55",
     ("Col. Roma Norte", "Col. Condesa", "Col. Del Valle", "Col. Narvarte", "Coyoacán")),
    ("Guadalajara", "Jalisco", "44", "33", ("Col. Providencia", "Col. Americana", "Chapalita")),
    ("Monterrey", "Nuevo León", "64", "81", ("Col. Obispado", "Col. Mitras Centro", "Cumbres")),
    ("Puebla", "Puebla", "72", "222", ("Col. La Paz", "Centro Histórico", "Angelópolis")),
    ("Querétaro", "Querétaro", "76", "442", ("Col. Jurica", "Centro", "Juriquilla")),
    ("Mérida", "Yucatán", "97", "999", ("Col. García Ginerés", "Montejo", "Col. Itzimná")),
    ("Oaxaca de Juárez", "Oaxaca", "68", "951", ("Col. Reforma", "Jalatlaco", "Centro")),
    ("Tijuana", "Baja California", "22", "664", ("Zona Río", "Col. Cacho", "Playas")),
    ("León", "Guanajuato", "37", "477", ("Col. Jardines del Moral", "Centro", "El Coecillo")),
    ("San Luis Potosí", "San Luis Potosí", "78", "444", ("Col. Tequisquiapan", "Lomas")),
    ("Toluca", "Estado de México", "50", "722", ("Col. Universidad", "San Bernardino")),
    ("Cancún", "Quintana Roo", "77", "998", ("Supermanzana 15", "Zona Hotelera")),
)  # fmt: skip
STREETS = (
    "Av. Insurgentes Sur", "Calle Niños Héroes", "Paseo de la Reforma", "Av. Juárez",
    "Calle Hidalgo", "Av. Revolución", "Calzada de Tlalpan", "Calle Morelos",
    "Av. Álvaro Obregón", "Calle 5 de Mayo", "Privada Ñuñoa", "Av. Vallarta",
)  # fmt: skip

# title, base price, variant titles
PRODUCTS = (
    ("Playera bordada", "349.00", ("Chica / Rojo", "Mediana / Rojo", "Grande / Azul")),
    ("Taza de talavera", "189.50", (None,)),
    ("Rebozo de seda", "1250.00", ("Rosa mexicano", "Añil")),
    ("Mezcal artesanal 750 ml", "899.00", ("Espadín", "Tobalá")),
    ("Café de Chiapas 500 g", "229.90", ("Grano", "Molido fino")),
    ("Sombrero charro", "1890.00", (None,)),
    ("Alebrije pequeño", "459.00", ("Jaguar", "Colibrí", "Búho")),
    ("Huaraches de piel", "799.00", ("24", "25", "26", "27")),
    ("Chocolate de Oaxaca", "135.00", ("Semiamargo", "Con canela")),
    ("Vela aromática «Cempasúchil»", "210.00", (None,)),
    ("Libreta de papel amate", "95.50", (None,)),
    ("Molcajete de piedra volcánica", "680.00", ("Chico", "Grande")),
)  # fmt: skip
NOTES = (
    "Entregar después de las 5 pm",
    "Por favor envolver para regalo 🎁",
    "Timbre no sirve, tocar la puerta",
    "Factura a nombre de Ñandú Diseño S.A. de C.V.",
    "Dejar con el portero — gracias",
    "¿Pueden incluir una tarjeta que diga «Feliz cumpleaños, mamá»?",
    'Línea 2: "frágil"',
)
TAGS = ("mayoreo", "vip", "envío-express", "regalo", "primera-compra", "🎁", "cliente frecuente")
CUSTOMER_TAGS = ("vip", "newsletter", "mayorista", "CDMX", "recompra", "b2b")
GATEWAYS = ("conekta", "mercadopago", "paypal", "oxxo", "openpay")
# gateway -> the payment methods it takes (picked evenly)
PAYMENT_METHODS = {
    "conekta": ("card", "card", "oxxo", "spei"),
    "mercadopago": ("card", "card", "oxxo"),
    "paypal": ("paypal",),
    "oxxo": ("oxxo",),
    "openpay": ("card", "spei"),
}
DECLINES = ("card_declined", "insufficient_funds", "expired_card", "suspected_fraud")
CARRIERS = (
    ("Estafeta", "https://rastreo.example.com/estafeta/"),
    ("DHL", "https://rastreo.example.com/dhl/"),
    ("FedEx", "https://rastreo.example.com/fedex/"),
    ("99minutos", "https://rastreo.example.com/99minutos/"),
)
PERCENT_CODES = {
    Decimal("0.05"): "BIENVENIDA5",
    Decimal("0.10"): "BUENFIN10",
    Decimal("0.15"): "HOTSALE15",
}
FIXED_CODES = (("REGALO50", Decimal("50.00")), ("VUELVE100", Decimal("100.00")))
SHIPPING_RATES = (Decimal("99.00"), Decimal("149.00"), Decimal("119.90"), Decimal("0.00"))
DISCOUNT_RATES = (Decimal("0.05"), Decimal("0.10"), Decimal("0.15"))


# --- the model --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    first_name: str
    last_name: str
    company: str | None
    address1: str
    address2: str | None
    city: str
    province: str
    zip: str
    country_code: str
    phone: str | None

    def as_json(self) -> JSON:
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company": self.company,
            "address1": self.address1,
            "address2": self.address2,
            "city": self.city,
            "province": self.province,
            "zip": self.zip,
            "country_code": self.country_code,
            "phone": self.phone,
        }


@dataclass(frozen=True, slots=True)
class CustomerAddress:
    id: str
    default: bool
    address: Address

    def as_json(self) -> JSON:
        return {"id": self.id, **self.address.as_json(), "default": self.default}


@dataclass(slots=True, eq=False)
class CustomerVersion:
    """A customer as it stood between two changes. Never changed but for its cached
    JSON: a change makes a new version (``dataclasses.replace``), so an order can keep
    the one it saw."""

    id: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    accepts_marketing: bool
    orders_count: int
    total_spent: Decimal
    tags: tuple[str, ...]
    addresses: tuple[CustomerAddress, ...]
    created_at: int
    updated_at: int
    deleted: bool = False
    blob: bytes | None = field(default=None, init=False)


@dataclass(slots=True)
class LineItem:
    id: str
    product_id: str
    variant_id: str
    sku: str
    title: str
    variant_title: str | None
    quantity: int
    price: Decimal
    total_discount: Decimal

    @property
    def total(self) -> Decimal:
        return self.price * self.quantity - self.total_discount


@dataclass(slots=True)
class Transaction:
    id: str
    kind: str
    status: str
    gateway: str
    payment_method: str
    amount: Decimal
    authorization: str | None
    error_code: str | None
    created_at: int
    processed_at: int | None


@dataclass(slots=True)
class Refund:
    id: str
    created_at: int
    amount: Decimal
    restock: bool
    note: str | None
    line_items: list[tuple[str, int, Decimal]]  # line item id, quantity, amount


@dataclass(slots=True)
class Fulfillment:
    id: str
    tracking_company: str | None
    tracking_number: str | None
    tracking_url: str | None
    created_at: int
    line_items: list[tuple[str, int]]  # line item id, quantity
    status: str = "success"


@dataclass(slots=True, eq=False)
class Order:
    id: str
    number: int
    email: str
    customer_id: str | None
    customer: CustomerVersion | None
    line_items: list[LineItem]
    shipping_address: Address | None
    billing_address: Address | None
    discount_rate: Decimal
    total_shipping: Decimal
    gateway: str
    note: str | None
    tags: list[str]
    created_at: int
    updated_at: int
    status: str = "open"
    financial_status: str = "pending"
    fulfillment_status: str = "unfulfilled"
    cancelled_at: int | None = None
    closed_at: int | None = None
    deleted: bool = False
    stage: str = "pending"
    edits: int = 0
    counted: bool = False
    subtotal: Decimal = ZERO
    total_discounts: Decimal = ZERO
    total_tax: Decimal = ZERO
    total: Decimal = ZERO
    payment_method: str = "card"
    fixed_code: tuple[str, Decimal] | None = None
    discount_codes: list[tuple[str, str, Decimal]] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    fulfillments: list[Fulfillment] = field(default_factory=list)

    def recompute(self) -> None:
        subtotal = sum((item.total for item in self.line_items), ZERO)
        percent = (subtotal * self.discount_rate).quantize(CENT, ROUND_HALF_UP)
        codes = []
        if percent > ZERO:
            codes.append((PERCENT_CODES[self.discount_rate], "percentage", percent))
        if self.fixed_code is not None:
            fixed = min(self.fixed_code[1], subtotal - percent)
            if fixed > ZERO:
                codes.append((self.fixed_code[0], "fixed_amount", fixed))
        discounts = sum((amount for _, _, amount in codes), ZERO)
        tax = ((subtotal - discounts) * TAX_RATE).quantize(CENT, ROUND_HALF_UP)
        self.subtotal = subtotal
        self.discount_codes = codes
        self.total_discounts = discounts
        self.total_tax = tax
        self.total = subtotal - discounts + tax + self.total_shipping

    @property
    def paid(self) -> Decimal:
        return sum(
            (t.amount for t in self.transactions if t.kind == "sale" and t.status == "success"),
            ZERO,
        )

    @property
    def refunded(self) -> Decimal:
        return sum((refund.amount for refund in self.refunds), ZERO)

    def refunded_units(self, line_item_id: str) -> int:
        return sum(
            quantity
            for refund in self.refunds
            for item_id, quantity, _ in refund.line_items
            if item_id == line_item_id
        )

    def shipped_units(self, line_item_id: str) -> int:
        return sum(
            quantity
            for shipment in self.fulfillments
            for item_id, quantity in shipment.line_items
            if item_id == line_item_id
        )


@dataclass(slots=True)
class Variant:
    id: str
    sku: str
    title: str | None
    price: Decimal


@dataclass(slots=True)
class Product:
    id: str
    title: str
    variants: list[Variant]
    inventory: int


# Which new thing a selling step creates.
_SIGNUP, _GUEST_OR_RETURNING, _NEW_CUSTOMER_ORDER = 0, 1, 2
_ALWAYS = -(2**62)


class World:
    """Everything the store holds, and the rules by which it changes.

    Resources and events are kept serialized (``bytes``): that is what the API and
    the webhooks send, and it is several times smaller than dicts. Finished orders
    are not kept as objects at all, only as their latest JSON.
    """

    def __init__(self, seed: int = 0, quirks: Quirks | None = None) -> None:
        self.seed = seed
        self.quirks = quirks or Quirks()
        self._rng = FastRandom(f"syncd-simulator/{seed}/world")
        self._style_rng = random.Random(f"syncd-simulator/{seed}/style")
        self._new_id = IdFactory(seed, "resources")
        self._new_event_id = IdFactory(seed, "events")
        self._next_number = 1001
        self._email_serial = 0
        self.last_ts = 0
        # Changes before this time change state without emitting events (history).
        self._record_from = _ALWAYS

        self.customers: dict[str, CustomerVersion] = {}
        self._active_customers: list[str] = []
        self._active_index: dict[str, int] = {}

        # What the API serves: the latest JSON of each resource.
        self.order_blobs: dict[str, bytes] = {}
        self.customer_blobs: dict[str, bytes] = {}
        self.order_updated: dict[str, int] = {}
        self.customer_updated: dict[str, int] = {}
        self.deleted_orders: dict[str, None] = {}  # dicts as ordered sets
        self.deleted_customers: dict[str, None] = {}
        self._stale_orders: dict[str, Order] = {}
        self._stale_customers: dict[str, None] = {}
        self._sorted_orders: list[tuple[int, str]] | None = None
        self._sorted_customers: list[tuple[int, str]] | None = None

        # Every event, in creation order (which is also time order).
        self.event_ids: list[str] = []
        self.event_blobs: list[bytes] = []
        self.event_times: list[int] = []
        self.event_index: dict[str, int] = {}
        self._fresh: list[tuple[str, bytes]] = []

        self.products = self._make_catalog()

    # --- the two ways of running the store ---------------------------------------

    def sell(
        self, orders: int, customers: int | None, clock: Callable[[], float]
    ) -> Iterator[list[tuple[str, bytes]]]:
        """Create ``orders`` orders (and customers) and change them until each order's
        life is over. Yields, after each step that emitted events, those events as
        (id, JSON body).

        Each step reads ``clock`` once: timestamps are the clock truncated to seconds,
        never going backwards.
        """
        plan = self._plan(orders, customers)
        rng = self._rng
        open_orders: list[Order] = []
        next_plan = 0
        while next_plan < len(plan) or open_orders:
            ts = max(int(clock()), self.last_ts)
            if next_plan < len(plan) and (not open_orders or rng.random() < 0.3):
                created = self._create(plan[next_plan], ts)
                next_plan += 1
                if created is not None:
                    open_orders.append(created)
            else:
                pick = rng.randrange(len(open_orders))
                if self._advance(open_orders[pick], ts) is None:
                    open_orders[pick] = open_orders[-1]
                    open_orders.pop()
            self._extras(ts)
            if self._fresh:
                fresh, self._fresh = self._fresh, []
                yield fresh

    def generate_history(
        self,
        orders: int,
        days: float,
        now: int,
        retention_seconds: int,
        customers: int | None = None,
    ) -> int:
        """Past orders and customers, their changes spread over the ``days`` before
        ``now``. Only changes within the retention window emit (listable) events;
        older ones just shape the resources. Returns the number of events emitted."""
        rng = self._rng
        events_before = len(self.event_ids)
        last_old_ts = self.event_times[-1] if self.event_times else None
        start = now - int(days * 86400)
        self._record_from = now - retention_seconds
        plan = self._plan(orders, customers)
        times = sorted(rng.randint(start, now) for _ in plan)
        pending: list[tuple[int, int, Order]] = []
        sequence = 0

        def schedule(order: Order, mean_delay: float | None, ts: int) -> None:
            nonlocal sequence
            if mean_delay is not None:
                when = ts + 1 + int(rng.expovariate(1.0 / mean_delay))
                if when <= now:
                    sequence += 1
                    heapq.heappush(pending, (when, sequence, order))
                    return
            self._settle(order)  # its life is over: keep only its JSON

        try:
            for kind, ts in zip(plan, times, strict=True):
                while pending and pending[0][0] <= ts:
                    when, _, order = heapq.heappop(pending)
                    schedule(order, self._advance(order, when), when)
                    self._extras(when)
                created = self._create(kind, ts)
                if created is not None:
                    schedule(created, 3600.0 * 6, ts)
                self._extras(ts)
            while pending:
                when, _, order = heapq.heappop(pending)
                schedule(order, self._advance(order, when), when)
        finally:
            self._record_from = _ALWAYS
            self._fresh = []
        for customer_id in self._stale_customers:
            self.customer_blobs[customer_id] = self._customer_blob(self.customers[customer_id])
        self._stale_customers.clear()
        self.last_ts = max(self.last_ts, now)
        emitted = self.event_times[events_before:]
        if last_old_ts is not None and emitted and emitted[0] < last_old_ts:
            self._resort_events()  # history made after selling: keep events in time order
        return len(self.event_ids) - events_before

    # --- reading ----------------------------------------------------------------

    def sorted_orders(self) -> list[tuple[int, str]]:
        """(updated_at, id) of every order, tombstones included, oldest first."""
        if self._sorted_orders is None:
            self._sorted_orders = sorted((ts, rid) for rid, ts in self.order_updated.items())
        return self._sorted_orders

    def sorted_customers(self) -> list[tuple[int, str]]:
        if self._sorted_customers is None:
            self._sorted_customers = sorted((ts, rid) for rid, ts in self.customer_updated.items())
        return self._sorted_customers

    # --- planning ---------------------------------------------------------------

    def _plan(self, orders: int, customers: int | None) -> list[int]:
        if orders < 0 or (customers is not None and customers < 0):
            raise ValueError("orders and customers must not be negative")
        if customers is None:
            customers = (orders * 2 + 4) // 5
        at_checkout = min(customers, orders)
        plan = (
            [_NEW_CUSTOMER_ORDER] * at_checkout
            + [_GUEST_OR_RETURNING] * (orders - at_checkout)
            + [_SIGNUP] * (customers - at_checkout)
        )
        self._rng.shuffle(plan)
        return plan

    def _create(self, kind: int, ts: int) -> Order | None:
        if kind == _SIGNUP:
            self._create_customer(ts)
            return None
        customer: CustomerVersion | None = None
        if kind == _NEW_CUSTOMER_ORDER:
            customer = self._create_customer(ts)
        elif self._active_customers and self._rng.random() < 0.85:
            customer = self.customers[self._rng.pick(self._active_customers)]
        return self._create_order(customer, ts)

    # --- customers ----------------------------------------------------------------

    def _person(self) -> tuple[str, str]:
        return self._rng.pick(FIRST_NAMES), self._rng.pick(LAST_NAMES)

    def _email(self, first: str, last: str) -> str:
        self._email_serial += 1
        local = f"{first}.{last}".translate(_ASCII).lower().replace("..", ".")
        domain = self._rng.pick(EMAIL_DOMAINS)
        email = f"{local}{self._email_serial}@{domain}"
        return email.capitalize() if self._rng.random() < 0.05 else email

    def _phone(self, area: str | None = None) -> str | None:
        rng = self._rng
        if rng.random() < 0.15:
            return None
        area = area or rng.pick(CITIES)[3]
        digits = 10 - len(area)
        rest = str(rng.randrange(10**digits)).zfill(digits)
        style = rng.random()
        if style < 0.4:
            return f"+52{area}{rest}"
        if style < 0.7:
            return f"+52 {area} {rest[:-4]} {rest[-4:]}"
        if style < 0.9:
            return f"({area}) {rest[:-4]}-{rest[-4:]}"
        return area + rest

    def _address(self, first: str, last: str) -> Address:
        rng = self._rng
        city, state, zip_prefix, area, hoods = rng.pick(CITIES)
        number = rng.randint(1, 3999)
        line1 = f"{rng.pick(STREETS)} {number}"
        if rng.random() < 0.2:
            line1 += f" Int. {rng.randint(1, 40)}"
        digits = 5 - len(zip_prefix)
        zip_code = zip_prefix + str(rng.randrange(10**digits)).zfill(digits)
        return Address(
            first_name=first,
            last_name=last,
            company=rng.pick(COMPANIES) if rng.random() < 0.08 else None,
            address1=line1,
            address2=rng.pick(hoods) if rng.random() < 0.8 else None,
            city=city,
            province=state,
            zip=zip_code,
            country_code="MX",
            phone=self._phone(area),
        )

    def _create_customer(self, ts: int) -> CustomerVersion:
        rng = self._rng
        first, last = self._person()
        addresses = tuple(
            CustomerAddress(self._new_id(), index == 0, self._address(first, last))
            for index in range(rng.pick((0, 1, 1, 1, 2)))
        )
        customer = CustomerVersion(
            id=self._new_id(),
            email=self._email(first, last),
            first_name=first,
            last_name=last,
            phone=self._phone(),
            accepts_marketing=rng.random() < 0.4,
            orders_count=0,
            total_spent=ZERO,
            tags=tuple(rng.few(CUSTOMER_TAGS, 2)),
            addresses=addresses,
            created_at=ts,
            updated_at=ts,
        )
        self._active_index[customer.id] = len(self._active_customers)
        self._active_customers.append(customer.id)
        self._put_customer(customer, "customer.created", ts)
        return customer

    def _change_customer(self, customer_id: str, ts: int, **changes: Any) -> CustomerVersion:
        current = self.customers[customer_id]
        updated = dataclasses.replace(current, updated_at=max(ts, current.updated_at), **changes)
        kind = "customer.deleted" if changes.get("deleted") else "customer.updated"
        self._put_customer(updated, kind, updated.updated_at)
        return updated

    def _edit_customer(self, ts: int) -> None:
        if not self._active_customers:
            return
        rng = self._rng
        current = self.customers[rng.pick(self._active_customers)]
        what = rng.random()
        if what < 0.3:
            self._change_customer(current.id, ts, phone=self._phone())
        elif what < 0.55:
            self._change_customer(current.id, ts, accepts_marketing=not current.accepts_marketing)
        elif what < 0.75:
            tags = tuple(sorted(set(current.tags) | {rng.pick(CUSTOMER_TAGS)}))
            self._change_customer(current.id, ts, tags=tags)
        elif what < 0.9:
            new = CustomerAddress(
                self._new_id(), True, self._address(current.first_name, current.last_name)
            )
            older = tuple(dataclasses.replace(a, default=False) for a in current.addresses)
            self._change_customer(current.id, ts, addresses=(new, *older[:2]))
        else:
            self._change_customer(
                current.id, ts, email=self._email(current.first_name, current.last_name)
            )

    def _delete_customer(self, ts: int) -> None:
        if len(self._active_customers) < 10:
            return
        customer_id = self._rng.pick(self._active_customers)
        index = self._active_index.pop(customer_id)
        last = self._active_customers.pop()
        if last != customer_id:
            self._active_customers[index] = last
            self._active_index[last] = index
        self._change_customer(customer_id, ts, deleted=True)

    # --- orders -----------------------------------------------------------------

    def _line_item(self) -> LineItem:
        rng = self._rng
        product = rng.pick(self.products)
        variant = rng.pick(product.variants)
        quantity = rng.pick((1, 1, 1, 1, 2, 2, 3, 4))
        discount = ZERO
        if rng.random() < 0.1:
            discount = (variant.price * quantity * Decimal("0.10")).quantize(CENT, ROUND_HALF_UP)
        return LineItem(
            id=self._new_id(),
            product_id=product.id,
            variant_id=variant.id,
            sku=variant.sku,
            title=product.title,
            variant_title=variant.title,
            quantity=quantity,
            price=variant.price,
            total_discount=discount,
        )

    def _create_order(self, customer: CustomerVersion | None, ts: int) -> Order:
        rng = self._rng
        if customer is not None:
            first, last, email = customer.first_name, customer.last_name, customer.email
            defaults = [a.address for a in customer.addresses if a.default]
            shipping: Address | None = defaults[0] if defaults else self._address(first, last)
        else:
            first, last = self._person()
            email = self._email(first, last)
            shipping = self._address(first, last)
        billing: Address | None = shipping
        billing_choice = rng.random()
        if billing_choice > 0.85:
            billing = self._address(first, last)
        elif billing_choice > 0.5:
            billing = None
        if rng.random() < 0.08:  # pick-up in store: no shipping address
            shipping = None
        order = Order(
            id=self._new_id(),
            number=self._next_number,
            email=email,
            customer_id=customer.id if customer else None,
            customer=customer,
            line_items=[self._line_item() for _ in range(rng.pick((1, 1, 2, 2, 3, 4, 5)))],
            shipping_address=shipping,
            billing_address=billing,
            discount_rate=rng.pick(DISCOUNT_RATES) if rng.random() < 0.2 else ZERO,
            total_shipping=rng.pick(SHIPPING_RATES) if shipping is not None else ZERO,
            gateway=rng.pick(GATEWAYS),
            note=rng.pick(NOTES) if rng.random() < 0.25 else None,
            tags=rng.few(TAGS, 2),
            created_at=ts,
            updated_at=ts,
        )
        self._next_number += 1
        order.payment_method = rng.pick(PAYMENT_METHODS[order.gateway])
        if rng.random() < 0.08:
            order.fixed_code = rng.pick(FIXED_CODES)
        order.recompute()
        if order.subtotal >= FREE_SHIPPING_FROM:
            order.total_shipping = ZERO
            order.recompute()
        if order.payment_method == "oxxo":  # the voucher is issued at checkout
            order.transactions.append(self._transaction(order, "sale", "pending", ts))
        self._put_order(order, "order.created", ts)
        return order

    def _transaction(
        self,
        order: Order,
        kind: str,
        status: str,
        ts: int,
        amount: Decimal | None = None,
        error_code: str | None = None,
    ) -> Transaction:
        settled = status in ("success", "failure")
        reference = f"{self._rng.randrange(10**10):010d}" if status != "failure" else None
        return Transaction(
            id=self._new_id(),
            kind=kind,
            status=status,
            gateway=order.gateway,
            payment_method=order.payment_method,
            amount=order.total if amount is None else amount,
            authorization=reference,
            error_code=error_code,
            created_at=ts,
            processed_at=ts if settled else None,
        )

    def _advance(self, order: Order, ts: int) -> float | None:
        """One step in an order's life. Returns the mean delay (seconds) until the
        next step, or None when the order's life is over."""
        rng = self._rng
        roll = rng.random()
        if order.stage == "pending":
            if roll < 0.70:
                self._pay(order, ts)
                return 86400.0 * 1.5
            if roll < 0.82 and order.edits < 3:
                self._edit_order(order, ts, items=True)
                return 3600.0 * 6
            if roll < 0.93:
                order.status, order.financial_status, order.stage = "cancelled", "voided", "done"
                order.cancelled_at = order.closed_at = max(ts, order.updated_at)
                self._expire_or_decline(order, ts)
                self._touch_order(order, "order.cancelled", ts)
                return None
            if roll < 0.95:
                self._delete_order(order, ts)
            return None  # abandoned: the order stays pending for good
        if order.stage == "paid":
            if roll < 0.75:
                if self._ship(order, ts):
                    return 86400.0 * 2  # the second shipment follows
                return 86400.0 * 7
            if roll < 0.85 and order.edits < 3:
                self._edit_order(order, ts, items=False)
                return 86400.0
            if roll < 0.90:
                self._refund(order, ts, cancel=True)
            return None
        if order.stage == "partial":
            self._ship(order, ts)
            return 86400.0 * 7
        if order.stage == "fulfilled":
            if roll < 0.03:
                self._refund(order, ts, cancel=False)
                return None
            if roll < 0.06 and self._partial_refund(order, ts):
                return 86400.0 * 7
            if roll < 0.12 and order.edits < 3:
                self._edit_order(order, ts, items=False)
                return 86400.0 * 7
            if roll < 0.13:
                self._delete_order(order, ts)
        return None

    def _pay(self, order: Order, ts: int) -> None:
        if order.customer_id is not None and order.customer_id in self._active_index:
            current = self.customers[order.customer_id]
            self._change_customer(
                order.customer_id,
                ts,
                orders_count=current.orders_count + 1,
                total_spent=current.total_spent + order.total,
            )
            order.counted = True
        self._settle_payment(order, ts)
        order.financial_status, order.stage = "paid", "paid"
        self._touch_order(order, "order.paid", ts)

    def _settle_payment(self, order: Order, ts: int) -> None:
        """The order's transactions once it is paid: the OXXO voucher paid, or a
        card sale (a quarter declined once first), a SPEI transfer or PayPal."""
        rng = self._rng
        vouchers = [t for t in order.transactions if t.status == "pending"]
        if vouchers:
            voucher = vouchers[0]
            voucher.status, voucher.processed_at, voucher.amount = "success", ts, order.total
            return
        if order.payment_method == "card" and rng.random() < 0.25:
            order.transactions.append(
                self._transaction(order, "sale", "failure", ts, error_code=rng.pick(DECLINES))
            )
        order.transactions.append(self._transaction(order, "sale", "success", ts))

    def _expire_or_decline(self, order: Order, ts: int) -> None:
        """An unpaid order cancelled: its OXXO voucher expires; a card order may
        show the declined attempt that made the buyer give up."""
        for voucher in order.transactions:
            if voucher.status == "pending":
                voucher.status = "expired"
        if order.payment_method == "card" and self._rng.random() < 0.3:
            order.transactions.append(
                self._transaction(order, "sale", "failure", ts, error_code=self._rng.pick(DECLINES))
            )

    def _ship(self, order: Order, ts: int) -> bool:
        """Ship what is left of the order; a quarter of the orders with more than
        one unit go out in two shipments. Returns True if a second one is due."""
        rng = self._rng
        left = [
            (item.id, item.quantity - order.shipped_units(item.id)) for item in order.line_items
        ]
        left = [(item_id, units) for item_id, units in left if units > 0]
        split = (
            not order.fulfillments and sum(units for _, units in left) > 1 and rng.random() < 0.25
        )
        lines = left
        if split:  # half the lines, or half the units of the only line
            lines = left[: len(left) // 2] if len(left) > 1 else [(left[0][0], left[0][1] // 2)]
        if order.shipping_address is None:  # picked up in store: nothing to track
            company = number = url = None
        else:
            company, base = rng.pick(CARRIERS)
            number = f"{rng.randrange(10**12):012d}"
            url = base + number
        order.fulfillments.append(
            Fulfillment(self._new_id(), company, number, url, max(ts, order.updated_at), lines)
        )
        if split:
            order.fulfillment_status = order.stage = "partial"
            self._touch_order(order, "order.updated", ts)
            return True
        order.fulfillment_status = order.stage = "fulfilled"
        order.status = "closed"
        order.closed_at = max(ts, order.updated_at)
        self._touch_order(order, "order.fulfilled", ts)
        return False

    def _partial_refund(self, order: Order, ts: int) -> bool:
        """Some units of one line back, with their share of the tax; never past
        what was paid less what was refunded already."""
        rng = self._rng
        candidates = [
            item for item in order.line_items if item.quantity > order.refunded_units(item.id)
        ]
        room = order.paid - order.refunded
        if not candidates or room <= ZERO:
            return False
        item = rng.pick(candidates)
        units = rng.randint(1, item.quantity - order.refunded_units(item.id))
        share = (item.total * units / item.quantity).quantize(CENT, ROUND_HALF_UP)
        amount = min((share * (1 + TAX_RATE)).quantize(CENT, ROUND_HALF_UP), room)
        if amount <= ZERO:
            return False
        when = max(ts, order.updated_at)
        order.refunds.append(
            Refund(self._new_id(), when, amount, True, None, [(item.id, units, share)])
        )
        order.transactions.append(self._transaction(order, "refund", "success", when, amount))
        # Units of the only line, shipping free: that may be all that was paid.
        order.financial_status = (
            "refunded" if order.refunded == order.paid else "partially_refunded"
        )
        self._touch_order(order, "order.refunded", ts)
        return True

    def _refund(self, order: Order, ts: int, *, cancel: bool) -> None:
        if order.counted and order.customer_id in self._active_index:
            assert order.customer_id is not None
            current = self.customers[order.customer_id]
            self._change_customer(
                order.customer_id, ts, total_spent=current.total_spent - order.total
            )
            order.counted = False
        amount = order.paid - order.refunded
        if amount > ZERO:
            when = max(ts, order.updated_at)
            lines = []
            for item in order.line_items:
                units = item.quantity - order.refunded_units(item.id)
                if units > 0:
                    share = (item.total * units / item.quantity).quantize(CENT, ROUND_HALF_UP)
                    lines.append((item.id, units, share))
            note = "Cancelado por el cliente" if cancel else None
            order.refunds.append(Refund(self._new_id(), when, amount, cancel, note, lines))
            order.transactions.append(self._transaction(order, "refund", "success", when, amount))
        order.financial_status, order.stage = "refunded", "done"
        if cancel:
            order.status = "cancelled"
            order.cancelled_at = order.closed_at = max(ts, order.updated_at)
        self._touch_order(order, "order.refunded", ts)

    def _edit_order(self, order: Order, ts: int, *, items: bool) -> None:
        """An ``order.updated``: note, tags, the shipping address while unfulfilled, and
        the line items while unpaid."""
        rng = self._rng
        order.edits += 1
        choices = ["note", "tags"]
        if order.fulfillment_status == "unfulfilled":
            choices.append("address")
        if items:
            choices.append("items")
        what = rng.pick(choices)
        if what == "note":
            order.note = rng.pick(NOTES) if order.note is None else order.note + " · actualizado"
        elif what == "tags":
            order.tags = sorted(set(order.tags) | {rng.pick(TAGS)})
        elif what == "address":
            if order.customer is not None:
                first, last = order.customer.first_name, order.customer.last_name
            else:
                first, last = self._person()
            order.shipping_address = self._address(first, last)
        else:
            lines = order.line_items
            change = rng.random()
            if change < 0.4 or len(lines) == 1:
                if len(lines) < 5:
                    lines.append(self._line_item())
                else:
                    lines[0].quantity += 1
            elif change < 0.7:
                lines.pop(rng.randrange(len(lines)))
            else:
                item = rng.pick(lines)
                item.quantity = item.quantity % 4 + 1
                item.total_discount = min(item.total_discount, item.price * item.quantity)
            order.recompute()
            for voucher in order.transactions:  # a new voucher amount for the new total
                if voucher.status == "pending":
                    voucher.amount = order.total
        self._touch_order(order, "order.updated", ts)

    def _delete_order(self, order: Order, ts: int) -> None:
        order.deleted, order.stage = True, "done"
        self._touch_order(order, "order.deleted", ts)

    def _touch_order(self, order: Order, kind: str, ts: int) -> None:
        order.updated_at = max(ts, order.updated_at)
        if order.customer_id is not None:
            current = self.customers[order.customer_id]
            if not current.deleted:
                order.customer = current
        self._put_order(order, kind, order.updated_at)

    # --- extras: things that happen beside orders ---------------------------------

    def _extras(self, ts: int) -> None:
        rng = self._rng
        roll = rng.random()
        if roll < 0.03:
            self._edit_customer(ts)
        elif roll < 0.033:
            self._delete_customer(ts)
        elif roll < 0.033 + self.quirks.unknown_event_rate:
            self._update_product(ts)

    def _make_catalog(self) -> list[Product]:
        products = []
        for index, (title, price, variant_titles) in enumerate(PRODUCTS):
            base = Decimal(price)
            variants = [
                Variant(
                    id=self._new_id(),
                    sku=f"MX-{index + 1:03d}-{number + 1:02d}",
                    title=variant_title,
                    price=base + Decimal(number * 20),
                )
                for number, variant_title in enumerate(variant_titles)
            ]
            products.append(Product(self._new_id(), title, variants, 100 + index * 7))
        return products

    def _update_product(self, ts: int) -> None:
        if ts < self._record_from:
            return
        product = self._rng.pick(self.products)
        product.inventory = max(0, product.inventory + self._rng.randint(-5, 20))
        money, when = self._style()
        data = {
            "id": product.id,
            "object": "product",
            "title": product.title,
            "inventory_quantity": product.inventory,
            "variants": [
                {"id": v.id, "sku": v.sku, "title": v.title, "price": money(v.price)}
                for v in product.variants
            ],
            "updated_at": when(ts),
        }
        self._emit("product.updated", orjson.dumps(data), ts)

    # --- rendering and recording ---------------------------------------------------

    def _style(self) -> tuple[MoneyFormat, TimeFormat]:
        """How one payload writes money and time (see ``Quirks``)."""
        rng = self._style_rng
        when = format_naive_utc if rng.random() < self.quirks.naive_timestamp_rate else format_local
        money: MoneyFormat = money_string
        if rng.random() < self.quirks.numeric_money_rate:
            money = money_float if rng.random() < 0.5 else money_number
        return money, when

    def _customer_blob(self, customer: CustomerVersion) -> bytes:
        if customer.blob is None:
            money, when = self._style()
            data: JSON = {
                "id": customer.id,
                "object": "customer",
                "email": customer.email,
                "first_name": customer.first_name,
                "last_name": customer.last_name,
                "phone": customer.phone,
                "accepts_marketing": customer.accepts_marketing,
                "orders_count": customer.orders_count,
                "total_spent": money(customer.total_spent),
                "tags": list(customer.tags),
                "addresses": [address.as_json() for address in customer.addresses],
                "created_at": when(customer.created_at),
                "updated_at": when(customer.updated_at),
            }
            if customer.deleted:
                data["deleted"] = True
            customer.blob = orjson.dumps(data)
        return customer.blob

    def _order_blob(self, order: Order) -> bytes:
        money, when = self._style()
        data: JSON = {
            "id": order.id,
            "object": "order",
            "number": order.number,
            "status": order.status,
            "financial_status": order.financial_status,
            "fulfillment_status": order.fulfillment_status,
            "currency": "MXN",
            "subtotal": money(order.subtotal),
            "total_discounts": money(order.total_discounts),
            "total_tax": money(order.total_tax),
            "total_shipping": money(order.total_shipping),
            "total": money(order.total),
            "email": order.email,
            "note": order.note,
            "tags": list(order.tags),
            "gateway": order.gateway,
            "line_items": [
                {
                    "id": item.id,
                    "product_id": item.product_id,
                    "variant_id": item.variant_id,
                    "sku": item.sku,
                    "title": item.title,
                    "variant_title": item.variant_title,
                    "quantity": item.quantity,
                    "price": money(item.price),
                    "total_discount": money(item.total_discount),
                    "total": money(item.total),
                }
                for item in order.line_items
            ],
            "shipping_address": (
                order.shipping_address.as_json() if order.shipping_address else None
            ),
            "billing_address": order.billing_address.as_json() if order.billing_address else None,
            "created_at": when(order.created_at),
            "updated_at": when(order.updated_at),
            "cancelled_at": _opt_time(when, order.cancelled_at),
            "closed_at": _opt_time(when, order.closed_at),
            "discount_codes": [
                {"code": code, "type": kind, "amount": money(amount)}
                for code, kind, amount in order.discount_codes
            ],
            "transactions": [
                {
                    "id": t.id,
                    "kind": t.kind,
                    "status": t.status,
                    "gateway": t.gateway,
                    "payment_method": t.payment_method,
                    "amount": money(t.amount),
                    "currency": "MXN",
                    "authorization": t.authorization,
                    "error_code": t.error_code,
                    "created_at": when(t.created_at),
                    "processed_at": _opt_time(when, t.processed_at),
                }
                for t in order.transactions
            ],
            "refunds": [
                {
                    "id": refund.id,
                    "created_at": when(refund.created_at),
                    "note": refund.note,
                    "amount": money(refund.amount),
                    "restock": refund.restock,
                    "line_items": [
                        {"line_item_id": item_id, "quantity": units, "amount": money(amount)}
                        for item_id, units, amount in refund.line_items
                    ],
                }
                for refund in order.refunds
            ],
            "fulfillments": [
                {
                    "id": shipment.id,
                    "status": shipment.status,
                    "tracking_company": shipment.tracking_company,
                    "tracking_number": shipment.tracking_number,
                    "tracking_url": shipment.tracking_url,
                    "created_at": when(shipment.created_at),
                    "updated_at": when(shipment.created_at),
                    "line_items": [
                        {"line_item_id": item_id, "quantity": units}
                        for item_id, units in shipment.line_items
                    ],
                }
                for shipment in order.fulfillments
            ],
        }
        if order.deleted:
            data["deleted"] = True
        customer = b"null" if order.customer is None else self._customer_blob(order.customer)
        # The nested customer is already serialized: splice it in as the last key.
        return orjson.dumps(data)[:-1] + b',"customer":' + customer + b"}"

    def _put_customer(self, customer: CustomerVersion, kind: str, ts: int) -> None:
        self.customers[customer.id] = customer
        self.customer_updated[customer.id] = customer.updated_at
        self._sorted_customers = None
        if customer.deleted:
            self.deleted_customers[customer.id] = None
        if ts < self._record_from:
            self._stale_customers[customer.id] = None
            return
        blob = self._customer_blob(customer)
        self.customer_blobs[customer.id] = blob
        self._stale_customers.pop(customer.id, None)
        self._emit(kind, blob, ts)

    def _put_order(self, order: Order, kind: str, ts: int) -> None:
        self.order_updated[order.id] = order.updated_at
        self._sorted_orders = None
        if order.deleted:
            self.deleted_orders[order.id] = None
        if ts < self._record_from:
            self._stale_orders[order.id] = order
            return
        blob = self._order_blob(order)
        self.order_blobs[order.id] = blob
        self._stale_orders.pop(order.id, None)
        self._emit(kind, blob, ts)

    def _settle(self, order: Order) -> None:
        """Bring the order's JSON up to date once it will not change any more."""
        if self._stale_orders.pop(order.id, None) is not None:
            self.order_blobs[order.id] = self._order_blob(order)

    def _emit(self, kind: str, data_blob: bytes, ts: int) -> None:
        _, when = self._style()
        event_id = self._new_event_id()
        envelope = {"id": event_id, "object": "event", "type": kind, "created_at": when(ts)}
        # Splice the already serialized resource rather than serializing it twice.
        blob = orjson.dumps(envelope)[:-1] + b',"data":' + data_blob + b"}"
        self.event_index[event_id] = len(self.event_ids)
        self.event_ids.append(event_id)
        self.event_blobs.append(blob)
        self.event_times.append(ts)
        self.last_ts = max(self.last_ts, ts)
        self._fresh.append((event_id, blob))

    def _resort_events(self) -> None:
        order = sorted(range(len(self.event_ids)), key=self.event_times.__getitem__)
        self.event_ids = [self.event_ids[i] for i in order]
        self.event_blobs = [self.event_blobs[i] for i in order]
        self.event_times = [self.event_times[i] for i in order]
        self.event_index = {event_id: index for index, event_id in enumerate(self.event_ids)}
