"""The operator's metrics: build info, the age of the oldest pending event and
the last successful reconcile per store, read from the database at scrape
time, on each test database."""

from __future__ import annotations

from datetime import timedelta
from importlib import metadata
from typing import Any

import pytest

from syncd import inbox
from syncd.app import create_app
from syncd.state import LAST_RUN, write_state
from tests.factories import posted_order
from tests.support import STUB_API_KEY, put_event, sample, scrape, serving, settings_for


def test_build_info_oldest_pending_age_and_last_reconcile_success(db: Any) -> None:
    settings = settings_for(
        db.url,
        SYNCD_API_URL="http://127.0.0.1:9/v1",  # never called: no worker, no scheduler
        SYNCD_API_KEY=STUB_API_KEY,
        SYNCD_RECONCILE_INTERVAL="600",
    )
    app = create_app(settings, db.engine, run_worker=False, run_scheduler=False)
    with serving(app) as base:
        text, empty = scrape(base)
        version = metadata.version("syncd")
        assert sample(empty, "syncd_build_info", version=version) == 1
        assert sample(empty, "syncd_events_oldest_pending_age_seconds", store="default") == 0
        assert "syncd_reconcile_last_success_timestamp_seconds{" not in text  # none yet
        assert sample(empty, "syncd_reconcile_interval_seconds", store="default") == 600

        put_event(db.engine, posted_order("evt_old", "o1"), state="pending", minutes_ago=7)
        put_event(db.engine, posted_order("evt_new", "o2"), state="pending", minutes_ago=1)
        put_event(db.engine, posted_order("evt_done", "o3"), state="applied", minutes_ago=60)
        succeeded = inbox.utcnow() - timedelta(minutes=20)
        write_state(
            db.engine,
            "default",
            LAST_RUN,
            {"error": "ApiUnavailable", "last_success_at": succeeded.isoformat()},
        )
        _, now = scrape(base)
    age = sample(now, "syncd_events_oldest_pending_age_seconds", store="default")
    assert age is not None and 7 * 60 <= age < 7 * 60 + 120
    last = sample(now, "syncd_reconcile_last_success_timestamp_seconds", store="default")
    assert last == pytest.approx(succeeded.timestamp(), abs=0.01)


def test_no_reconcile_interval_without_reconciling(db: Any) -> None:
    app = create_app(settings_for(db.url), db.engine, run_worker=False, run_scheduler=False)
    with serving(app) as base:
        text, samples = scrape(base)
    assert "syncd_reconcile_interval_seconds{" not in text
    assert sample(samples, "syncd_events_oldest_pending_age_seconds", store="default") == 0
