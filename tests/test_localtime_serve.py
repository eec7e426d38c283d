"""``syncd serve`` restarted with another time zone recomputes the store's local
columns at start-up, before it takes a webhook, and says so in one log line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx

from syncd.config import StoreConfig
from tests.factories import placed
from tests.support import apply_all, deliver, free_port, rows


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
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncd", "serve"],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.ConnectError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
            time.sleep(0.05)
        # Listening means the start-up step is done: 21:30 in Tijuana is 23:30 here.
        [after] = rows(db.engine, "orders")
        assert after["created_at_local"] == datetime(2026, 12, 1, 23, 30)
        assert after["created_date_local"] == date(2026, 12, 1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = [line for line in log_path.read_text().splitlines() if "localtime.recomputed" in line]
    assert len(lines) == 1, log_path.read_text()
    assert "America/Tijuana" in lines[0] and "America/Mexico_City" in lines[0]
