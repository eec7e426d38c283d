"""syncd.state: reconcile's records in sync_state, saved and loaded alike on
every database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.errors import WireError
from syncd.state import EVENTS_CURSOR, LAST_RUN, EventsCursor, LastRun, read_state, write_state


def test_the_events_cursor_round_trips(db: Any) -> None:
    assert EventsCursor.load(db.engine, "default") is None
    at = datetime(2026, 11, 27, 18, 4, 5, 123456, tzinfo=UTC)
    EventsCursor(at).save(db.engine, "default")
    assert read_state(db.engine, "default", EVENTS_CURSOR) == {"at": at.isoformat()}
    assert EventsCursor.load(db.engine, "default") == EventsCursor(at)
    assert EventsCursor.load(db.engine, "other") is None


def test_an_unreadable_cursor_fails_reconcile_and_reads_as_none_for_status(db: Any) -> None:
    write_state(db.engine, "default", EVENTS_CURSOR, {"at": "ayer"})
    with pytest.raises(WireError, match="sync_state"):
        EventsCursor.load(db.engine, "default")
    assert EventsCursor.load(db.engine, "default", strict=False) is None


def test_a_failed_run_keeps_the_last_success_and_when_the_failures_began(db: Any) -> None:
    ok = {"store": "default", "started_at": "2026-12-01T10:00:00+00:00", "error": None}
    ok["finished_at"] = "2026-12-01T10:00:05+00:00"
    LastRun.after(ok, None).save(db.engine, "default")
    first = LastRun.load(db.engine, "default")
    assert first is not None and first.failing_since is None
    assert first.succeeded_at == datetime(2026, 12, 1, 10, 0, 5, tzinfo=UTC)
    for started in ("2026-12-01T10:15:00+00:00", "2026-12-01T10:30:00+00:00"):
        failed = {"store": "default", "started_at": started, "error": "ApiUnavailable: down"}
        LastRun.after(failed, LastRun.load(db.engine, "default")).save(db.engine, "default")
    last = read_state(db.engine, "default", LAST_RUN)
    assert last == {
        "store": "default",
        "started_at": "2026-12-01T10:30:00+00:00",
        "error": "ApiUnavailable: down",
        "last_success_at": "2026-12-01T10:00:05+00:00",
        "failing_since": "2026-12-01T10:15:00+00:00",
    }
    loaded = LastRun.load(db.engine, "default")
    assert loaded is not None and loaded.facts["mode"] is None
    assert loaded.facts["failing_since"] == "2026-12-01T10:15:00+00:00"
    with db.engine.connect() as conn:
        assert set(LastRun.load_all(conn)) == {"default"}
