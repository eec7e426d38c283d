"""``syncd serve`` restarted with another time zone recomputes the store's local
columns at start-up, before it takes a webhook, and says so in one log line."""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

from syncd.config import StoreConfig
from tests.factories import placed
from tests.support import apply_all, deliver, free_port, rows, syncd_serving


def test_a_restart_with_another_zone_recomputes_the_local_columns(db: Any, tmp_path: Path) -> None:
    tijuana = StoreConfig("default", timezone="America/Tijuana")
    deliver(db.engine, placed("ord_evening", "2026-12-02T05:30:00Z"))  # 21:30 in Tijuana
    apply_all(db.engine, tijuana)
    [before] = rows(db.engine, "orders")
    assert before["created_date_local"] == date(2026, 12, 1)

    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_PORT": str(port),
        "SYNCD_RECONCILE_INTERVAL": "0",
        "SYNCD_TIMEZONE": "America/Mexico_City",
    }
    log_path = tmp_path / "serve.log"
    with syncd_serving(env, log_path, cwd=tmp_path):
        # Listening means the start-up step is done: 21:30 in Tijuana is 23:30 here.
        [after] = rows(db.engine, "orders")
        assert after["created_at_local"] == datetime(2026, 12, 1, 23, 30)
        assert after["created_date_local"] == date(2026, 12, 1)
    lines = [line for line in log_path.read_text().splitlines() if "localtime.recomputed" in line]
    assert len(lines) == 1, log_path.read_text()
    assert "America/Tijuana" in lines[0] and "America/Mexico_City" in lines[0]
