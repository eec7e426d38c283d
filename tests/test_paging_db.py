"""Concurrent paging end to end: the simulated store over real HTTP, with a
latency on every answer and a limit on requests in flight, into SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from syncd.config import load_settings
from syncd.db.models import Event
from syncd.reconcile import sync_resource
from syncd.shoperti.client import ShopertiClient
from syncd.simulator import Faults, SimulatedStore
from syncd.state import read_state
from tests.conftest import TestDatabase
from tests.support import truth_problems, wait_for

KEY = "sk_test_paging"


@contextmanager
def simulated(seed: int, faults: Faults) -> Iterator[SimulatedStore]:
    store = SimulatedStore(seed=seed, api_key=KEY, faults=faults, time_scale=1 / 36000)
    store.start_in_thread()
    try:
        yield store
    finally:
        store.stop_thread()


def backfill_events(db: TestDatabase) -> int:
    with db.engine.connect() as conn:
        where = Event.source == "backfill"
        return int(conn.scalar(select(func.count()).select_from(Event).where(where)) or 0)


def env_for(db: TestDatabase, store: SimulatedStore, concurrency: int) -> dict[str, str]:
    return {
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_API_URL": store.api_url,
        "SYNCD_API_KEY": KEY,
        "SYNCD_RECONCILE_INTERVAL": "0",
        "SYNCD_API_CONCURRENCY": str(concurrency),
    }


def test_backfill_killed_with_pages_in_flight_resumes_on_the_right_page(
    db: TestDatabase, tmp_path: Path
) -> None:
    # Enough pages that the listing is far from done when the first batch
    # (1,000 orders) commits its checkpoint, even on a slow, loaded database,
    # and an API slow enough that requests are in flight meanwhile.
    orders, customers = 6000, 300
    with simulated(23, Faults(api_latency=0.5)) as store:
        store.generate_history(orders=orders, days=30, customers=customers)
        env = {**os.environ, **env_for(db, store, 4)}
        command = [sys.executable, "-m", "syncd", "backfill"]
        first = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            # A batch of orders is committed with its checkpoint, and the
            # listing goes on with requests in flight (up to 4: how many at
            # the moment of the kill depends on how fast the writer runs).
            wait_for(
                lambda: (
                    read_state(db.engine, "default", "backfill:orders") is not None
                    and store.api_in_flight >= 1
                ),
                timeout=90,
                message="a checkpoint of the orders with pages in flight",
            )
            in_flight_at_kill = store.api_in_flight
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(30)
        assert first.returncode == -signal.SIGKILL
        assert in_flight_at_kill >= 1
        assert store.api_peak_in_flight == 4  # the listing did run 4 at once
        checkpoint = read_state(db.engine, "default", "backfill:orders")
        assert checkpoint is not None
        resume_page = checkpoint["cursor"]["page"]
        order_pages, customer_pages = -(-orders // 100), -(-customers // 100)
        assert 2 <= resume_page <= order_pages
        # Exactly the pages before the checkpoint are in: whole pages of 100.
        assert checkpoint["seen"] == (resume_page - 1) * 100
        wait_for(lambda: store.api_in_flight == 0, message="the killed run's requests answered")
        pages_before = store.api_answers.get(200, 0)

        store.set_api_faults(Faults(api_latency=0.02))
        second = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert second.returncode == 0, second.stderr
        assert read_state(db.engine, "default", "backfill:orders") is None
        truth = store.truth()
        assert truth_problems(db.engine, truth) == []
        # Every version once: no duplicate events, nothing skipped.
        assert backfill_events(db) == len(truth.orders) + len(truth.customers)
        # The rerun listed the customers again (they had finished) and the
        # orders from the checkpoint's page on: not one page more or fewer.
        read_again = store.api_answers.get(200, 0) - pages_before
        assert read_again == customer_pages + order_pages - resume_page + 1
        assert store.api_busy == 0


def test_a_429_storm_is_ridden_out_with_few_refusals_and_nothing_lost(
    db: TestDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    # The API allows 2 requests in flight; syncd may send 8.
    faults = Faults(api_latency=0.05, api_max_concurrent=2, api_retry_after=1)
    caplog.set_level(logging.INFO, logger="syncd.shoperti")
    with simulated(29, faults) as store:
        store.generate_history(orders=1500, days=30, customers=600)
        settings = load_settings(env_for(db, store, 8))
        config = settings.store()
        assert config.api_concurrency == 8

        async def backfill() -> None:
            async with ShopertiClient(store.api_url, KEY) as client:
                for resource in ("customers", "orders"):
                    await sync_resource(db.engine, config, client, resource, None)

        asyncio.run(backfill())
        truth = store.truth()
        assert truth_problems(db.engine, truth) == []
        assert backfill_events(db) == len(truth.orders) + len(truth.customers)
        pages = 15 + 6
        answers = store.api_answers
        assert answers.get(200, 0) == pages  # every page read once, none given up
        # No storm. Each narrowing is paid for by at most the requests that were
        # in flight when the first 429 of that window came back (the gate then
        # closes), so the refusals are bounded by the windows narrowed from;
        # which windows those are depends on timing (8 -> 4 -> 2 in the first
        # listing, or 8 -> 4 there and 4 -> 2 in the second), but over 21 pages
        # there are at most three narrowings: down to 2, and one probe of 3,
        # after which the next probe waits 64 successes.
        narrowed_from = [
            record.__dict__["was"]
            for record in caplog.records
            if record.getMessage() == "api.concurrency" and record.__dict__["reason"] == "429"
        ]
        assert 1 <= len(narrowed_from) <= 3, narrowed_from
        assert store.api_busy <= sum(narrowed_from), (store.api_busy, narrowed_from)
        assert store.api_busy <= 8 + 4 + 3
        assert store.api_peak_in_flight == 2
