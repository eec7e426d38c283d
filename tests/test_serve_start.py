"""What `syncd serve` says at start-up: a warning per store that accepts
webhooks without a token, and one line (not uvicorn's log record) when its
port is taken."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import syncd


def _env(db: Any, **more: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SYNCD_DATABASE_URL": db.url, **more}


def test_serve_warns_once_per_store_without_a_webhook_secret(
    sqlite_db: Any, tmp_path: Path
) -> None:
    toml = tmp_path / "stores.toml"
    toml.write_text(
        '[[stores]]\nname = "guarded"\nwebhook_secret = "whsec_guarded_123"\n'
        '[[stores]]\nname = "open"\n',
        encoding="utf-8",
    )
    env = _env(sqlite_db, SYNCD_CONFIG=str(toml), SYNCD_PORT="0")
    process = subprocess.Popen(
        [sys.executable, "-m", "syncd", "serve"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    records: list[dict[str, Any]] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            records.append(json.loads(line))
            if records[-1]["event"] == "serve.ready":
                break
        assert records and records[-1]["event"] == "serve.ready", records
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0
    warnings = [r for r in records if r["event"] == "serve.no_webhook_secret"]
    assert [(r["level"], r["store"]) for r in warnings] == [("warning", "open")]
    assert "without a token" in warnings[0]["reason"]
    assert "whsec_guarded_123" not in json.dumps(records)


def test_serve_on_a_taken_port_is_one_line(sqlite_db: Any, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = syncd("serve", env=_env(sqlite_db, SYNCD_PORT=str(port)), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"syncd: cannot listen on 127.0.0.1:{port} (Address already in use)")
    assert "SYNCD_PORT" in lines[0]


def test_refused_webhooks_are_logged_with_their_reason(
    sqlite_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from test_receiver import daemon

    caplog.set_level(logging.WARNING, logger="syncd.receiver")
    with daemon(sqlite_db.url, sqlite_db.engine, run_worker=False) as client:
        assert client.post("/webhooks/shoperti", content=b"[1, 2]").status_code == 400
        assert client.post("/webhooks/shoperti", content=b"not json").status_code == 400
    answered = [r for r in caplog.records if r.getMessage() == "webhook.answered"]
    assert [(r.status, r.reason) for r in answered] == [  # type: ignore[attr-defined]
        (400, "body is not a JSON object"),
        (400, "body is not JSON"),
    ]
