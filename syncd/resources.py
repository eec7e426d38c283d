"""The resources syncd lists from the API, each declared once.

A synced resource is its list endpoint (``GET /v1/<name>``), the filter
that asks for what changed since a time, the ``sync_state`` row that says
where syncing it stands, and — for orders and customers — the kind of
snapshot event each listed copy becomes (docs/api.md §2, docs/apply-rules.md).
The client, reconcile, backfill, audit and ``syncd status`` read these
declarations; none of them spells a resource's details out again. Nothing
here imports the rest of syncd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

ResourceName = Literal["events", "orders", "customers"]
SnapshottedName = Literal["orders", "customers"]
SnapshotKind = Literal["order", "customer"]


@dataclass(frozen=True, slots=True)
class SyncedResource:
    name: ResourceName
    """The list endpoint, ``GET /v1/<name>``."""
    since_param: str
    """The list's filter for "changed since" (events by creation, the others by update)."""
    state: str
    """Its ``sync_state`` row: the events cursor, or a resource sync's page checkpoint."""
    snapshot: SnapshotKind | None
    """What a listed copy becomes in the inbox: a snapshot event about one
    order or customer; None for events, which are stored as they are."""


EVENTS: Final = SyncedResource("events", "created_at_min", "events_cursor", None)
ORDERS: Final = SyncedResource("orders", "updated_at_min", "backfill:orders", "order")
CUSTOMERS: Final = SyncedResource("customers", "updated_at_min", "backfill:customers", "customer")

BY_NAME: Final[Mapping[str, SyncedResource]] = {r.name: r for r in (EVENTS, ORDERS, CUSTOMERS)}
#: What a resource sync (backfill, audit) lists, in this order: customers
#: first, so that an order's customer is in when the order arrives.
SNAPSHOTTED: Final[tuple[SnapshottedName, ...]] = ("customers", "orders")
