"""A simulated Shoperti store, for tests, demos, load tests and deployment rehearsals.

It serves the API of docs/api.md §2 on loopback from memory, sells (creates and
changes customers and orders, each change emitting an event), and POSTs each event
to a webhook URL with the platform's retry policy and optional faults (the README's
"Rehearse without a store" shows it in use).

It imports nothing from the rest of syncd: it only speaks the wire format, as JSON,
so it stays an honest stand-in for the platform.

    from syncd.simulator import SimulatedStore, Faults

    async with SimulatedStore(seed=42, api_key="sk_test", webhook_url=url,
                              faults=Faults(drop_rate=0.1)) as store:
        await store.sell(orders=300)
        await store.wait_deliveries(timeout=60)
        truth = store.truth()

Choices a client of it should know (details in each module's docstring):

- Deletions: ``order.deleted`` / ``customer.deleted`` carry the resource with
  ``"deleted": true`` and ``updated_at`` = the deletion time. Lists keep such
  tombstones (so a resource sync by ``updated_at_min`` learns of deletions);
  ``GET /orders/{id}`` of one answers 404 (``Quirks(deleted_by_id="tombstone")``
  returns the tombstone instead). ``Truth`` keeps tombstones too and lists their ids.
- Money, exact in ``Decimal``: line ``total = price * quantity - total_discount``;
  ``subtotal`` = sum of line totals; ``total_discounts`` = order-level discounts only;
  ``total_tax`` = 16 % of ``subtotal - total_discounts``, rounded half-up;
  ``total = subtotal - total_discounts + total_tax + total_shipping``. A payload
  writes all its amounts as strings (``"1160.00"``) or all as numbers (``1160.0``
  or ``1160``).
  ``total_discounts`` is the sum of the order's ``discount_codes``.
- Payments, refunds, shipments: card sales (some declined first), OXXO vouchers
  (pending, then paid, or expired when the order is cancelled), SPEI and PayPal
  in ``transactions``; partial and full ``refunds`` with their lines and a
  ``refund`` transaction each, never more than was paid; ``fulfillments`` with
  tracking, about a quarter in two shipments.
- Time: the clock (default: the wall clock) truncated to whole seconds, so events
  tie. Timestamps carry ``-06:00``; about 2 % of payloads are naive, meaning UTC
  (the same instant, written in UTC without an offset).
- Ids are cuid-like (``c`` + 24 base-36 characters) for resources and events alike.
- Unknown event types (``product.updated``) appear now and then.

Modules: ``world`` (the data and its rules, pure and seeded), ``api`` (the HTTP
API), ``webhooks`` (delivery, retries, faults), ``faults``, ``store`` (all of it
together), ``cli`` (``syncd simulator``).
"""

from syncd.simulator.faults import Faults
from syncd.simulator.store import SimulatedStore, Truth
from syncd.simulator.webhooks import DeliveryStats
from syncd.simulator.world import Quirks

__all__ = ["DeliveryStats", "Faults", "Quirks", "SimulatedStore", "Truth"]
