"""Reconcile's state, kept in ``sync_state``: typed records with load and save.

One row per (store, name), its ``value`` JSON:

- ``events_cursor`` (:class:`EventsCursor`): up to when reconcile has listed
  the API's events; the next pass lists from it, less the lookback.
- ``backfill:orders`` / ``backfill:customers`` (each resource's ``state`` in
  :mod:`syncd.resources`; :class:`syncd.reconcile.PageCheckpoint`): where a
  resource sync in progress resumes (the client's page cursor), deleted when
  the sync ends.
- ``reconcile_last_run`` (:class:`LastRun`): the last pass's report, when
  reconcile last succeeded and since when it has been failing.

Reconcile writes them; ``syncd status`` and ``/metrics`` read them, through
the same records. (The store's clock zone lives there too; see
:mod:`syncd.localtime`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Engine, Table, delete, select
from sqlalchemy.engine import Connection

from syncd.db import dialect
from syncd.db.models import SyncState
from syncd.errors import WireError
from syncd.inbox import utcnow
from syncd.resources import EVENTS
from syncd.shoperti import wire

sync_state: Table = SyncState.__table__  # type: ignore[assignment]

EVENTS_CURSOR: Final = EVENTS.state
LAST_RUN: Final = "reconcile_last_run"


# --- the rows -------------------------------------------------------------------------


def read_state(engine: Engine, store: str, name: str) -> dict[str, Any] | None:
    with dialect.reading(engine) as conn:
        value = conn.scalar(
            select(sync_state.c.value).where(sync_state.c.store == store, sync_state.c.name == name)
        )
        conn.commit()
    return dict(value) if value is not None else None


def write_state(engine: Engine, store: str, name: str, value: dict[str, Any] | None) -> None:
    with engine.begin() as conn:
        write_state_on(conn, store, name, value)


def write_state_on(conn: Connection, store: str, name: str, value: dict[str, Any] | None) -> None:
    """Set (or, with ``None``, delete) one state row inside ``conn``'s transaction."""
    if value is None:
        conn.execute(
            delete(sync_state).where(sync_state.c.store == store, sync_state.c.name == name)
        )
        return
    dialect.upsert(
        conn,
        sync_state,
        [{"store": store, "name": name, "value": value, "updated_at": utcnow()}],
        update=["value", "updated_at"],
    )


def time_of(value: Any) -> datetime | None:
    """A stored ISO 8601 time, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return wire.timestamp(value, "sync_state")
    except WireError:
        return None


# --- the records ----------------------------------------------------------------------


@dataclass(frozen=True)
class EventsCursor:
    """Reconcile has listed the API's events created up to ``at``."""

    at: datetime

    @classmethod
    def load(cls, engine: Engine, store: str, *, strict: bool = True) -> EventsCursor | None:
        """The store's cursor, None without one. A stored time that cannot be
        read raises :class:`WireError` (reconcile then fails with the reason),
        or with ``strict=False`` reads as None (``syncd status``)."""
        at = (read_state(engine, store, EVENTS_CURSOR) or {}).get("at")
        if not isinstance(at, str):
            return None
        if not strict:
            parsed = time_of(at)
            return cls(parsed) if parsed is not None else None
        parsed = wire.timestamp(at, "sync_state")
        return cls(parsed) if parsed is not None else None

    def save(self, engine: Engine, store: str) -> None:
        write_state(engine, store, EVENTS_CURSOR, {"at": self.at.isoformat()})


LAST_RUN_FACTS: Final = (
    "mode",
    "started_at",
    "finished_at",
    "events_seen",
    "found",
    "error",
    "last_success_at",
    "failing_since",
)


@dataclass(frozen=True)
class LastRun:
    """The last reconcile pass of a store: its report (JSON, as the run left
    it) and the two times that outlive one run."""

    report: Mapping[str, Any]
    last_success_at: str | None
    failing_since: str | None  # when the current run of failures began

    @classmethod
    def after(cls, report: Mapping[str, Any], previous: LastRun | None) -> LastRun:
        """The record of a pass that just ended with ``report``."""
        if report.get("error") is None:
            return cls(report, report.get("finished_at"), None)
        return cls(
            report,
            previous.last_success_at if previous else None,
            (previous.failing_since if previous else None) or report.get("started_at"),
        )

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> LastRun:
        return cls(value, value.get("last_success_at"), value.get("failing_since"))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.report,
            "last_success_at": self.last_success_at,
            "failing_since": self.failing_since,
        }

    @property
    def facts(self) -> dict[str, Any]:
        """What ``syncd status`` shows of it."""
        value = self.to_json()
        return {key: value.get(key) for key in LAST_RUN_FACTS}

    @property
    def succeeded_at(self) -> datetime | None:
        return time_of(self.last_success_at)

    @classmethod
    def load(cls, engine: Engine, store: str) -> LastRun | None:
        value = read_state(engine, store, LAST_RUN)
        return cls.from_json(value) if value is not None else None

    @classmethod
    def load_all(cls, conn: Connection) -> dict[str, LastRun]:
        """Every store's last run, by store."""
        rows = conn.execute(
            select(sync_state.c.store, sync_state.c.value).where(sync_state.c.name == LAST_RUN)
        ).all()
        return {store: cls.from_json(value or {}) for store, value in rows}

    def save(self, engine: Engine, store: str) -> None:
        write_state(engine, store, LAST_RUN, self.to_json())
