"""``syncd events``: an operator's handle on the inbox (the ``events`` table).

- ``list``: id, type, resource id, status, attempts, received_at and
  last_error of the events that match, newest first; never a payload, and
  anything shaped like an e-mail address (or a configured secret) in an
  error text is masked.
- ``show``: one event's columns; its payload only when asked for.
- ``retry``: puts failed and/or rejected events back to ``pending`` with
  ``attempts`` 0, in one transaction, and says how many it moved. A rejected
  event is also marked unverified, so in ``api`` mode it is fetched from the
  API again before anything is applied. The worker of a running ``syncd
  serve`` picks them up at its next poll (it only ever claims ``pending``
  rows, so the two never fight over a row); without a daemon, the next
  ``syncd serve`` does, or ``syncd replay`` for failed ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import SQLAlchemyError

from syncd.config import Settings
from syncd.db import dialect
from syncd.db.engine import check_schema_at_head, make_engine
from syncd.db.models import Event
from syncd.errors import DatabaseUnavailable, SyncdError
from syncd.ops.logs import scrub
from syncd.vocabulary import RETRYABLE, EventStatus

LIST_COLUMNS = (
    "store",
    "id",
    "type",
    "resource_id",
    "status",
    "attempts",
    "received_at",
    "last_error",
)
SHOW_COLUMNS = (
    "store",
    "id",
    "type",
    "resource",
    "resource_id",
    "created_at",
    "received_at",
    "source",
    "status",
    "verified",
    "attempts",
    "next_attempt_at",
    "processed_at",
    "last_error",
)
STATUSES = tuple(EventStatus)
MAX_ERROR = 300


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _clean_error(value: str | None) -> str | None:
    return None if value is None else scrub(value)[:MAX_ERROR]


def _stores(settings: Settings, store: str | None) -> list[str]:
    if store is not None:
        return [settings.store(store).name]
    return list(settings.stores)


def list_events(
    engine: Engine,
    stores: Sequence[str],
    *,
    status: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The matching events, newest received first, without payloads."""
    query = select(*(getattr(Event, name) for name in LIST_COLUMNS)).where(Event.store.in_(stores))
    if status is not None:
        query = query.where(Event.status == status)
    if event_type is not None:
        query = query.where(Event.type == event_type)
    if since is not None:
        query = query.where(Event.received_at >= since)
    query = query.order_by(Event.received_at.desc(), Event.id.desc()).limit(limit)
    with dialect.reading(engine) as conn:
        rows = conn.execute(query).all()
        conn.commit()
    found = []
    for row in rows:
        entry = {name: _value(getattr(row, name)) for name in LIST_COLUMNS}
        entry["last_error"] = _clean_error(entry["last_error"])
        found.append(entry)
    return found


def show_event(
    engine: Engine, stores: Sequence[str], event_id: str, *, payload: bool = False
) -> dict[str, Any]:
    """One event's columns (its payload only with ``payload``)."""
    columns = [getattr(Event, name) for name in SHOW_COLUMNS]
    if payload:
        columns.append(Event.payload)
    with dialect.reading(engine) as conn:
        rows = conn.execute(
            select(*columns).where(Event.store.in_(stores), Event.id == event_id)
        ).all()
        conn.commit()
    if not rows:
        raise SyncdError(f"no event {event_id!r} in store(s) {', '.join(stores)}")
    if len(rows) > 1:
        raise SyncdError(
            f"event {event_id!r} is in several stores "
            f"({', '.join(sorted(row.store for row in rows))}): name one with --store"
        )
    row = rows[0]
    entry = {name: _value(getattr(row, name)) for name in SHOW_COLUMNS}
    entry["last_error"] = _clean_error(entry["last_error"])
    if payload:
        entry["payload"] = row.payload
    return entry


@dataclass(frozen=True)
class Retried:
    moved: int
    by_status: dict[str, int]
    unknown: list[str]  # --id values that are not in the inbox
    not_retryable: list[str]  # --id values that are neither failed nor rejected
    dry_run: bool


def retry_events(
    engine: Engine,
    stores: Sequence[str],
    *,
    ids: Sequence[str] = (),
    status: str | None = None,
    dry_run: bool = False,
) -> Retried:
    """Failed/rejected events back to ``pending`` in one transaction."""
    if bool(ids) == (status is not None):
        raise SyncdError("give either --id ID… or --status failed|rejected")
    if status is not None and status not in RETRYABLE:
        raise SyncdError(f"--status must be failed or rejected, not {status!r}")
    wanted = list(dict.fromkeys(ids))
    where = [Event.store.in_(stores), Event.status.in_((status,) if status else RETRYABLE)]
    with engine.connect() as conn:
        # The rows are locked until the update commits, so a count printed is
        # a count moved, even with another `syncd events retry` at the same time.
        selected = select(Event.store, Event.id, Event.status).where(*where)
        if wanted:
            selected = selected.where(Event.id.in_(wanted))
        rows = conn.execute(selected.with_for_update()).all()
        unknown: list[str] = []
        not_retryable: list[str] = []
        if wanted:
            present = set(
                conn.scalars(select(Event.id).where(Event.store.in_(stores), Event.id.in_(wanted)))
            )
            movable = {row.id for row in rows}
            unknown = [i for i in wanted if i not in present]
            not_retryable = [i for i in wanted if i in present and i not in movable]
        by_status: dict[str, int] = {}
        for row in rows:
            by_status[row.status] = by_status.get(row.status, 0) + 1
        if rows and not dry_run:
            groups: dict[tuple[str, str], list[str]] = {}
            for row in rows:
                groups.setdefault((row.store, row.status), []).append(row.id)
            for (store, status_was), chosen in groups.items():
                values: dict[str, Any] = {
                    "status": EventStatus.PENDING,
                    "attempts": 0,
                    "next_attempt_at": None,
                    "processed_at": None,
                }
                if status_was == EventStatus.REJECTED:
                    values["verified"] = False  # checked against the API again
                for ids_in in dialect.key_in(conn, Event.__table__.c.id, chosen):
                    conn.execute(
                        update(Event)
                        .where(Event.store == store, ids_in, Event.status == status_was)
                        .values(**values)
                    )
        conn.commit()
    return Retried(len(rows), by_status, unknown, not_retryable, dry_run)


# --- the command --------------------------------------------------------------------


def _database_error(exc: SQLAlchemyError) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"cannot use the database ({type(exc).__name__}): check SYNCD_DATABASE_URL "
        "and that the server is up"
    )


def run(settings: Settings, action: str, args: Any) -> int:
    """``syncd events ACTION``; returns the exit status."""
    stores = _stores(settings, args.store)
    engine = make_engine(settings.database_url)
    try:
        check_schema_at_head(engine)
        if action == "list":
            return _print_list(engine, stores, args)
        if action == "show":
            return _print_show(engine, stores, args)
        return _print_retry(engine, stores, args)
    except SQLAlchemyError as exc:
        # The driver's text may hold the URL or parameters: name the kind only.
        raise _database_error(exc) from None
    finally:
        engine.dispose()


def _print_list(engine: Engine, stores: list[str], args: Any) -> int:
    found = list_events(
        engine,
        stores,
        status=args.status,
        event_type=args.type,
        since=args.since,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    if not found:
        print("no events match")
        return 0
    header = ("STORE", "ID", "TYPE", "RESOURCE", "STATUS", "ATTEMPTS", "RECEIVED", "LAST ERROR")
    table = [header] + [
        (
            e["store"],
            e["id"],
            e["type"],
            e["resource_id"] or "-",
            e["status"],
            str(e["attempts"]),
            e["received_at"] or "-",
            e["last_error"] or "-",
        )
        for e in found
    ]
    widths = [max(len(str(line[col])) for line in table) for col in range(len(header) - 1)]
    for line in table:
        cells = [str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)]
        print("  ".join([*cells, str(line[-1])]))
    return 0


def _print_show(engine: Engine, stores: list[str], args: Any) -> int:
    entry = show_event(engine, stores, args.id, payload=args.payload)
    if args.json:
        print(json.dumps(entry, indent=2, default=str))
        return 0
    for name in SHOW_COLUMNS:
        value = entry[name]
        print(f"{name:16} {'-' if value is None else value}")
    if args.payload:
        print("payload")
        print(json.dumps(entry["payload"], indent=2, default=str))
    return 0


def _print_retry(engine: Engine, stores: list[str], args: Any) -> int:
    result = retry_events(
        engine, stores, ids=args.id or (), status=args.status, dry_run=args.dry_run
    )
    detail = ", ".join(f"{n} {status}" for status, n in sorted(result.by_status.items()))
    verb = "would move" if result.dry_run else "moved"
    print(f"{verb} {result.moved} event(s) back to pending" + (f" ({detail})" if detail else ""))
    if result.not_retryable:
        print(
            f"left {len(result.not_retryable)} event(s) that are neither failed nor rejected: "
            + ", ".join(result.not_retryable)
        )
    if result.unknown:
        print(f"no such event: {', '.join(result.unknown)}")
        return 1
    return 0
