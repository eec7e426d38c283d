"""``syncd status``: what an operator (or a monitoring check) needs to know.

Per store: last event received and applied, pending / applied / ignored /
rejected / failed counts, the reconcile cursor, its last run (when, how,
what it found, its error) and the apply lag (age of the oldest pending
event). Exits 1 when something needs an operator: failed events, or
reconcile failing for longer than two intervals; 0 otherwise.

It only reads. It must never show a payload, a secret, an event's
``last_error`` (it may quote customer data) or any other customer data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from syncd.config import Settings
from syncd.db import dialect
from syncd.db.engine import check_schema_at_head, make_engine
from syncd.db.failures import explain
from syncd.db.models import Event
from syncd.inbox import utcnow
from syncd.ops.logs import scrub
from syncd.ops.metrics import Freshness
from syncd.state import EventsCursor, LastRun, time_of
from syncd.vocabulary import EventStatus

STATUSES = tuple(EventStatus)


def collect(
    engine: Engine, settings: Settings, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The facts of every configured store, as plain JSON-able values."""
    now = now or utcnow()
    stores: list[dict[str, Any]] = []
    # A reading connection: on SQLite it does not queue behind the worker's writes.
    with dialect.reading(engine) as conn:
        for store in settings.stores.values():
            here = Event.store == store.name
            rows = conn.execute(
                select(Event.status, func.count()).where(here).group_by(Event.status)
            ).all()
            counts = {row[0]: int(row[1]) for row in rows}
            last_received = conn.scalar(select(func.max(Event.received_at)).where(here))
            last_applied = conn.scalar(
                select(func.max(Event.processed_at)).where(
                    here, Event.status == EventStatus.APPLIED
                )
            )
            oldest_pending = conn.scalar(
                select(func.min(Event.received_at)).where(here, Event.status == EventStatus.PENDING)
            )
            stores.append(
                {
                    "store": store.name,
                    "verify": store.verify,
                    "api": store.has_api,
                    "last_received_at": _iso(last_received),
                    "last_applied_at": _iso(last_applied),
                    "counts": {status: int(counts.get(status, 0)) for status in STATUSES},
                    "apply_lag_seconds": round(max((now - oldest_pending).total_seconds(), 0), 3)
                    if oldest_pending is not None
                    else 0.0,
                }
            )
        conn.commit()
    for entry in stores:
        cursor = EventsCursor.load(engine, entry["store"], strict=False)
        last_run = LastRun.load(engine, entry["store"])
        entry["reconcile_cursor"] = cursor.at.isoformat() if cursor is not None else None
        entry["reconcile_last_run"] = last_run.facts if last_run else None
        if last_run and last_run.report.get("error"):
            entry["reconcile_last_run"]["error"] = scrub(str(last_run.report["error"]))[:300]
        entry["problems"] = problems(entry, settings, now)
        entry["advice"] = advice(entry)
    return stores


def freshness(engine: Engine, stores: Iterable[str] = ()) -> dict[str, Freshness]:
    """Per store (``stores`` and any with pending events or a reconcile run):
    when its oldest pending event was received and when its reconcile last
    succeeded (for /metrics)."""
    facts: dict[str, Freshness] = {}
    with dialect.reading(engine) as conn:
        oldest = dict(
            conn.execute(
                select(Event.store, func.min(Event.received_at))
                .where(Event.status == EventStatus.PENDING)
                .group_by(Event.store)
            ).all()
        )
        runs = LastRun.load_all(conn)
        conn.commit()
    success = {store: run.succeeded_at for store, run in runs.items()}
    for store in sorted(set(stores) | set(oldest) | set(success)):
        facts[store] = Freshness(oldest.get(store), success.get(store))
    return facts


def problems(entry: dict[str, Any], settings: Settings, now: datetime) -> list[str]:
    """What needs an operator; an empty list means all is well."""
    found = []
    failed = entry["counts"][EventStatus.FAILED]
    if failed:
        found.append(
            f"{failed} failed event(s): see `syncd events list --status failed --store "
            f"{entry['store']}`, fix the cause, then `syncd events retry --status failed "
            f"--store {entry['store']}`"
        )

    run = entry["reconcile_last_run"]
    interval = settings.reconcile_interval
    if entry["api"] and interval > 0 and run and run.get("error"):
        # Failing since the last success; without one, since the first failure
        # we know of (the oldest of the recorded times).
        since = time_of(run.get("last_success_at")) or _oldest(
            time_of(run.get("failing_since")), time_of(run.get("started_at"))
        )
        if since is not None and now - since > timedelta(seconds=2 * interval):
            found.append(
                f"reconcile has been failing since {since.isoformat()} "
                f"(more than two intervals of {interval:g} s)"
            )
    return found


def advice(entry: dict[str, Any]) -> list[str]:
    """Worth a look, not a failure: rejected events (anyone can post a made-up
    event, so they alone do not make the exit status 1)."""
    rejected = entry["counts"][EventStatus.REJECTED]
    if not rejected:
        return []
    return [
        f"{rejected} rejected event(s): see `syncd events list --status rejected --store "
        f"{entry['store']}`; if the API knows them after all, `syncd events retry --status "
        f"rejected --store {entry['store']}` verifies them again"
    ]


def _oldest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def read(settings: Settings) -> list[dict[str, Any]]:
    """:func:`collect` on the configured database, with one-line errors."""
    engine = make_engine(settings.database_url)
    try:
        check_schema_at_head(engine)
        return collect(engine, settings)
    except SQLAlchemyError as exc:
        # The driver's cause, on one line without the password (syncd.db.failures).
        raise explain(exc, settings.database_url) from None
    finally:
        engine.dispose()


def render_text(stores: list[dict[str, Any]]) -> str:
    lines = []
    for entry in stores:
        counts = entry["counts"]
        run = entry["reconcile_last_run"] or {}
        lines += [
            f"store {entry['store']} (verify={entry['verify']}, "
            f"api={'yes' if entry['api'] else 'no'})",
            f"  last received  {entry['last_received_at'] or '-'}",
            f"  last applied   {entry['last_applied_at'] or '-'}",
            "  events         " + ", ".join(f"{status} {counts[status]}" for status in STATUSES),
            f"  apply lag      {entry['apply_lag_seconds']} s (oldest pending event)",
            f"  reconcile      cursor {entry['reconcile_cursor'] or '-'}",
            f"  last run       {run.get('finished_at') or '-'} ({run.get('mode') or '-'}, "
            f"found {run.get('found') or 0}, error {run.get('error') or 'none'}; "
            f"last success {run.get('last_success_at') or '-'})",
        ]
        lines += [f"  PROBLEM        {problem}" for problem in entry["problems"]]
        lines += [f"  NOTE           {note}" for note in entry["advice"]]
    return "\n".join(lines) + "\n"


def print_status(settings: Settings, *, as_json: bool) -> int:
    """Print the status; returns the exit status (1 when an operator is needed)."""
    stores = read(settings)
    healthy = not any(entry["problems"] for entry in stores)
    if as_json:
        print(json.dumps({"ok": healthy, "stores": stores}, indent=2))
    else:
        print(render_text(stores), end="")
    return 0 if healthy else 1
