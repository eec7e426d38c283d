"""Replay: the normalized tables rebuilt from the stored events.

``syncd replay`` deletes a store's normalized rows and applies its applied,
ignored and failed events again, through the same apply step as the worker
(:func:`syncd.worker.write_isolated`), in one transaction: BI users see the
old tables until the new ones are complete.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, true
from sqlalchemy.engine import Connection

from syncd import apply, inbox, localtime, worker
from syncd.config import StoreConfig
from syncd.db import dialect
from syncd.db.models import NORMALIZED, metadata
from syncd.inbox import utcnow
from syncd.ops.metrics import type_label
from syncd.vocabulary import EventStatus, VerifyMode
from syncd.worker import Report, events

REPLAYED = (EventStatus.APPLIED, EventStatus.IGNORED, EventStatus.FAILED)


def replay_store(engine: Engine, store: StoreConfig, *, chunk: int = 1000) -> Report:
    """Rebuild the normalized tables of ``store`` from its stored events, in one
    transaction (BI users see the old tables until the new ones are complete).

    Every event that was applied, ignored or failed is applied again (in
    ``api`` mode only the verified ones); pending events are left to the
    worker, rejected ones are never applied. One event that cannot be written
    fails alone, as in the worker.
    """
    report = Report()
    now = utcnow()
    with engine.connect() as conn, dialect.transaction_lock(conn, f"apply:{store.name}"):
        for name in NORMALIZED:
            table = metadata.tables[name]
            conn.execute(table.delete().where(table.c.store == store.name))
        localtime.ensure_zone(conn, store.name, store.timezone)  # records the zone
        after = ""
        while rows := conn.execute(_replayed(store, after).limit(chunk)).all():
            _replay_chunk(conn, store, rows, now, report)
            after = rows[-1].id
        conn.commit()
    return report


def _replayed(store: StoreConfig, after: str) -> Select[Any]:
    """The events of ``store`` a replay applies again, by id after ``after``."""
    return inbox.events_to_apply(
        store.name,
        events.c.status.in_(REPLAYED),
        # In api mode only the API's copies are ever applied.
        events.c.verified.is_(True) if store.verify == VerifyMode.API else true(),
        events.c.id > after,
    ).order_by(events.c.id)


def _replay_chunk(
    conn: Connection, store: StoreConfig, rows: Sequence[Any], now: datetime, report: Report
) -> None:
    stored = [apply.StoredEvent(row.id, row.type, row.payload, row.snapshot) for row in rows]
    outcomes = worker.write_isolated(conn, store, stored, now)
    groups: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for row in rows:
        outcome = outcomes[row.id]
        if outcome.status == apply.RETRY:  # no second chance inside a replay
            outcome = apply.Outcome(EventStatus.FAILED, outcome.error)
        groups[(outcome.status, outcome.error)].append(row.id)
        report.by_type[(type_label(row.type), outcome.status)] += 1
        setattr(report, outcome.status, getattr(report, outcome.status) + 1)
    worker.set_outcomes(conn, store.name, groups, processed_at=now)
