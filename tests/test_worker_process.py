"""The apply step in a child process (what `syncd serve` runs), on SQLite,
PostgreSQL and MariaDB: the same outcome as in a thread, and a child that
dies is replaced without losing its batch."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest
from sqlalchemy import select

from syncd import worker_process
from syncd.config import load_settings
from syncd.db.models import Event
from syncd.worker import apply_pending
from syncd.worker_process import ApplyProcess
from tests.factories import order_event
from tests.support import STORE, deliver, snapshot


def statuses(db: Any) -> dict[str, str]:
    with db.engine.connect() as conn:
        return {row.id: row.status for row in conn.execute(select(Event.id, Event.status))}


def test_the_child_applies_exactly_as_a_thread_does(db: Any) -> None:
    events = [order_event(f"evt_{n}", order_id=f"ord_{n % 3}", updated_at=n) for n in range(9)]
    deliver(db.engine, *events)
    apply_pending(db.engine, STORE, limit=100, max_attempts=3)
    in_thread = snapshot(db.engine)
    db.reset()

    deliver(db.engine, *events)
    process = ApplyProcess(load_settings({"SYNCD_DATABASE_URL": db.url}))
    try:
        report = asyncio.run(process.pending(STORE))
    finally:
        process.close()
    assert (report.applied, report.failed, report.retried) == (9, 0, 0)
    assert sum(count for (_, status), count in report.by_type.items() if status == "applied") == 9
    assert snapshot(db.engine) == in_thread
    assert set(statuses(db).values()) == {"applied"}


def test_a_killed_child_is_replaced_and_its_batch_is_still_pending(db: Any) -> None:
    settings = load_settings({"SYNCD_DATABASE_URL": db.url, "SYNCD_WORKER_BATCH_SIZE": "5"})
    process = ApplyProcess(settings)

    async def scenario() -> None:
        deliver(db.engine, order_event("evt_first", order_id="ord_1"))
        assert (await process.pending(STORE)).applied == 1
        assert process._pool is not None
        [child] = process._pool._processes.values()
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        deliver(db.engine, order_event("evt_after", order_id="ord_2"))
        with pytest.raises(BrokenProcessPool):
            await process.pending(STORE)
        assert statuses(db)["evt_after"] == "pending"
        assert (await process.pending(STORE)).applied == 1  # a new child

    try:
        asyncio.run(scenario())
    finally:
        process.close()
    assert statuses(db) == {"evt_first": "applied", "evt_after": "applied"}


def _start_then_wait(url: str, parent: int) -> None:
    worker_process._start_child(url, "WARNING", [], parent)
    time.sleep(60)  # only the watchdog can end this process early


def test_a_child_whose_daemon_died_before_it_started_exits_by_itself(sqlite_db: Any) -> None:
    # The daemon was killed while the child was still starting: the pid the
    # child must watch is the daemon's, given by the daemon, long gone.
    gone = subprocess.Popen(["true"])
    gone.wait()
    child = multiprocessing.get_context("spawn").Process(
        target=_start_then_wait, args=(sqlite_db.url, gone.pid)
    )
    child.start()
    child.join(20)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child outlived the daemon it was told to watch"
    assert child.exitcode == 0
