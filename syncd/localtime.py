"""The store's own clock: local wall-clock times and days beside the UTC ones.

Dashboards group sales by day, and a merchant's day is local: an order
placed at 19:30 in Mexico City on the 1st is on the 2nd in UTC. Each store
has an IANA time zone (its ``timezone`` setting); ``orders`` and
``order_refunds`` carry ``created_at_local`` (wall-clock time, no zone) and
``created_date_local`` computed with it, daylight saving included, so every
database groups by local day with plain SQL.

A store's rows never mix two zones. The zone the local columns were computed
with is recorded in ``sync_state`` (name ``timezone``); before anything is
written for a store, :func:`ensure_zone` compares it with the configured
one and, if they differ (or none is recorded, e.g. rows from before these
columns existed), recomputes that store's local columns in the same
transaction, and logs one line saying so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.engine import Connection, Engine

from syncd.config import DEFAULT_TIMEZONE as DEFAULT_TIMEZONE
from syncd.config import StoreConfig
from syncd.db import dialect
from syncd.db.models import Order as OrderRow
from syncd.db.models import OrderRefund as RefundRow
from syncd.db.models import SyncState as SyncStateRow

log = logging.getLogger("syncd.localtime")

STATE_NAME = "timezone"

orders: Table = OrderRow.__table__  # type: ignore[assignment]
refunds: Table = RefundRow.__table__  # type: ignore[assignment]
sync_state: Table = SyncStateRow.__table__  # type: ignore[assignment]


@functools.cache
def zone(name: str) -> ZoneInfo:
    """The zone named ``name`` (validated at start-up by the settings)."""
    return ZoneInfo(name)


def local(at: datetime | None, tz: ZoneInfo) -> tuple[datetime | None, date | None]:
    """``at`` (aware) as the wall-clock time in ``tz`` without a zone, and its day."""
    if at is None:
        return None, None
    wall = at.astimezone(tz).replace(tzinfo=None)
    return wall, wall.date()


def recorded_zone(conn: Connection, store: str) -> str | None:
    value = conn.scalar(
        select(sync_state.c.value).where(
            sync_state.c.store == store, sync_state.c.name == STATE_NAME
        )
    )
    return value.get("zone") if isinstance(value, dict) else None


def ensure_zone(conn: Connection, store: str, name: str) -> bool:
    """Recompute ``store``'s local columns if they were computed with another
    zone than ``name`` (or none is recorded). Runs inside the caller's
    transaction, under the store's apply lock, before the caller writes.
    Returns whether it recomputed."""
    before = recorded_zone(conn, store)
    if before == name:
        return False
    tz = zone(name)
    counts = {table.name: _recompute(conn, table, store, tz) for table in (orders, refunds)}
    now = datetime.now(UTC)
    dialect.upsert(
        conn,
        sync_state,
        [{"store": store, "name": STATE_NAME, "value": {"zone": name}, "updated_at": now}],
        update=["value", "updated_at"],
    )
    if before is None and not any(counts.values()):
        return True  # a store's first write: nothing to recompute, nothing to say
    log.warning(
        "localtime.recomputed",
        extra={
            "store": store,
            "from_zone": before or "none recorded",
            "to_zone": name,
            "orders": counts["orders"],
            "refunds": counts["order_refunds"],
        },
    )
    return True


def ensure_zones(engine: Engine, stores: Iterable[StoreConfig]) -> None:
    """:func:`ensure_zone` for each configured store (``StoreConfig``s), each
    in its own transaction under the store's apply lock: at start-up of the
    commands that write, so a changed zone is applied before anything else."""
    for store in stores:
        with engine.connect() as conn, dialect.transaction_lock(conn, f"apply:{store.name}"):
            ensure_zone(conn, store.name, store.timezone)
            conn.commit()


def _recompute(conn: Connection, table: Table, store: str, tz: ZoneInfo) -> int:
    key = [column.name for column in table.primary_key.columns if column.name != "store"]
    rows = conn.execute(
        select(*(table.c[name] for name in key), table.c.created_at).where(table.c.store == store)
    ).all()
    if not rows:
        return 0
    stmt = (
        update(table)
        .where(
            table.c.store == bindparam("b_store"),
            *(table.c[name] == bindparam(f"b_{name}") for name in key),
        )
        .values(created_at_local=bindparam("b_local"), created_date_local=bindparam("b_date"))
    )
    params = []
    for row in rows:
        wall, day = local(row.created_at, tz)
        entry: dict[str, Any] = {"b_store": store, "b_local": wall, "b_date": day}
        entry.update({f"b_{name}": getattr(row, name) for name in key})
        params.append(entry)
    for start in range(0, len(params), 5000):
        conn.execute(stmt, params[start : start + 5000])
    return len(rows)
