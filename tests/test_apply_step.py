"""Everything that applies goes through one apply step: under ``syncd serve``
the apply process, reconcile's and backfill's events included; on SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event

from syncd.app import Daemon
from syncd.config import load_settings
from syncd.demo import compare_with_truth
from syncd.simulator import SimulatedStore
from syncd.state import EventsCursor, LastRun
from tests.conftest import TestDatabase

KEY = "sk_test_apply_step"
# A statement that writes a synced table or the inbox (COPY on PostgreSQL).
WRITES = re.compile(
    r"^\s*(INSERT|UPDATE|DELETE|COPY|REPLACE)\b.*?\b(events|orders|customers|order_\w+)\b",
    re.IGNORECASE | re.DOTALL,
)


@contextmanager
def writes_from(engine: Engine) -> Iterator[list[str]]:
    """The statements this process sends through ``engine`` that write the
    inbox or a synced table."""
    seen: list[str] = []

    def spy(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if WRITES.match(statement):
            seen.append(statement.split("(")[0][:80])

    event.listen(engine, "before_cursor_execute", spy)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", spy)


def first_reconcile(db: TestDatabase, *, apply_in_process: bool) -> list[str]:
    """The daemon's first scheduled reconcile pass (no cursor yet: a resource
    sync of the whole store, as a backfill does); returns what this process
    wrote."""
    store = SimulatedStore(seed=5, api_key=KEY, time_scale=1 / 36000)
    store.start_in_thread()
    try:
        store.generate_history(orders=250, days=10, customers=80)
        settings = load_settings(
            {
                "SYNCD_DATABASE_URL": db.url,
                "SYNCD_API_URL": store.api_url,
                "SYNCD_API_KEY": KEY,
                "SYNCD_RECONCILE_INTERVAL": "0",
            }
        )

        async def run() -> list[str]:
            daemon = Daemon(settings, db.engine, apply_in_process=apply_in_process)
            try:
                with writes_from(db.engine) as writes:
                    await daemon.reconcile_jobs()["default"]()
                return writes
            finally:
                if daemon.apply_process is not None:
                    daemon.apply_process.close()
                for client in daemon.clients.values():
                    await client.aclose()

        writes = asyncio.run(run())
        truth = store.truth()
    finally:
        store.stop_thread()
    last = LastRun.load(db.engine, "default")
    assert last is not None and last.report["mode"] == "resources", last
    assert last.report["error"] is None
    assert EventsCursor.load(db.engine, "default") is not None
    assert compare_with_truth(db.engine, "default", truth.orders, truth.customers) == []
    return writes


def test_under_serve_a_resource_sync_applies_in_the_apply_process(db: TestDatabase) -> None:
    # Every order and customer is in, and not one row of them (nor of the
    # inbox) was written by the daemon's own process: the child did it all.
    assert first_reconcile(db, apply_in_process=True) == []


def test_without_an_apply_process_the_same_pass_writes_here(sqlite_db: TestDatabase) -> None:
    # The spy above is not blind: with the apply step in a thread, the same
    # pass writes the inbox and the tables through this process's engine.
    writes = first_reconcile(sqlite_db, apply_in_process=False)
    assert any(re.search(r"\borders\b", w) for w in writes), writes
    assert any(re.search(r"\bevents\b", w) for w in writes), writes
