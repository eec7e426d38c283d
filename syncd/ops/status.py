"""``syncd status``: what an operator (or a monitoring check) needs to know.

Per store: last event received and applied, pending / failed / rejected
counts, reconcile cursor and last run, apply lag. Exits 1 when something
needs an operator: failed events, or reconcile failing for longer than two
intervals. Shows no payloads, secrets or customer data.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from syncd.config import Settings
from syncd.db.engine import make_engine
from syncd.db.models import Event
from syncd.inbox import utcnow
from syncd.reconcile import EVENTS_CURSOR, LAST_RUN, read_state
from syncd.shoperti import wire


def collect(engine: Engine, settings: Settings) -> list[dict[str, Any]]:
    now = utcnow()
    stores: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for store in settings.stores.values():
            here = Event.store == store.name
            counts = dict(
                conn.execute(select(Event.status, func.count()).where(here).group_by(Event.status))
                .tuples()
                .all()
            )
            last_received = conn.scalar(select(func.max(Event.received_at)).where(here))
            last_applied = conn.scalar(
                select(func.max(Event.processed_at)).where(here, Event.status == "applied")
            )
            oldest_pending = conn.scalar(
                select(func.min(Event.received_at)).where(here, Event.status == "pending")
            )
            stores.append(
                {
                    "store": store.name,
                    "verify": store.verify,
                    "api": store.has_api,
                    "last_received_at": _iso(last_received),
                    "last_applied_at": _iso(last_applied),
                    "counts": {
                        s: int(counts.get(s, 0))
                        for s in ("pending", "applied", "ignored", "rejected", "failed")
                    },
                    "apply_lag_seconds": round((now - oldest_pending).total_seconds(), 3)
                    if oldest_pending is not None
                    else 0.0,
                }
            )
        conn.commit()
    for entry in stores:
        cursor = read_state(engine, entry["store"], EVENTS_CURSOR)
        last_run = read_state(engine, entry["store"], LAST_RUN)
        entry["reconcile_cursor"] = (cursor or {}).get("at")
        entry["reconcile_last_run"] = (
            {
                key: last_run.get(key)
                for key in (
                    "mode",
                    "started_at",
                    "finished_at",
                    "events_seen",
                    "found",
                    "error",
                    "last_success_at",
                )
            }
            if last_run
            else None
        )
        entry["problems"] = _problems(entry, settings, now)
    return stores


def _problems(entry: dict[str, Any], settings: Settings, now: datetime) -> list[str]:
    problems = []
    if entry["counts"]["failed"]:
        problems.append(f"{entry['counts']['failed']} failed events need an operator")
    run = entry["reconcile_last_run"]
    interval = settings.reconcile_interval
    if entry["api"] and interval > 0 and run and run.get("error"):
        since = wire.timestamp(run.get("last_success_at") or run.get("started_at"), "status")
        if since is not None and now - since > timedelta(seconds=2 * interval):
            problems.append("reconcile has been failing for more than two intervals")
    return problems


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def print_status(settings: Settings, *, as_json: bool) -> int:
    engine = make_engine(settings.database_url)
    try:
        stores = collect(engine, settings)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps({"stores": stores}, indent=2))
    else:
        for entry in stores:
            counts = entry["counts"]
            run = entry["reconcile_last_run"] or {}
            print(f"store {entry['store']} (verify={entry['verify']})")
            print(f"  last received  {entry['last_received_at'] or '-'}")
            print(f"  last applied   {entry['last_applied_at'] or '-'}")
            print(
                f"  events         pending {counts['pending']}, applied {counts['applied']}, "
                f"ignored {counts['ignored']}, rejected {counts['rejected']}, "
                f"failed {counts['failed']}"
            )
            print(f"  apply lag      {entry['apply_lag_seconds']} s")
            print(
                f"  reconcile      cursor {entry['reconcile_cursor'] or '-'}; last run "
                f"{run.get('finished_at') or '-'} ({run.get('mode') or '-'}, "
                f"found {run.get('found', 0)}, error {run.get('error') or 'none'})"
            )
            for problem in entry["problems"]:
                print(f"  PROBLEM        {problem}")
    return 1 if any(entry["problems"] for entry in stores) else 0
