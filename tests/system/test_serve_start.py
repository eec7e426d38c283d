"""What `syncd serve` says at start-up: a warning per store that accepts
webhooks without a token, and one line (not uvicorn's log record) when its
port is taken."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.support import daemon, run_syncd, syncd_serving


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
    log_path = tmp_path / "serve.log"

    def records() -> list[dict[str, Any]]:
        text = log_path.read_text(encoding="utf-8")
        complete = text[: text.rfind("\n") + 1]  # not a line still being written
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]

    with syncd_serving(
        env,
        log_path,
        cwd=tmp_path,
        until=lambda: any(r["event"] == "serve.ready" for r in records()),
        timeout=90,
        stop_timeout=90,
    ) as daemon:
        assert daemon.terminate(timeout=90) == 0
    logged = records()
    warnings = [r for r in logged if r["event"] == "serve.no_webhook_secret"]
    assert [(r["level"], r["store"]) for r in warnings] == [("warning", "open")]
    assert "without a token" in warnings[0]["reason"]
    assert "whsec_guarded_123" not in log_path.read_text()


def test_serve_on_a_taken_port_is_one_line(sqlite_db: Any, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_syncd("serve", env=_env(sqlite_db, SYNCD_PORT=str(port)), cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"syncd: cannot listen on 127.0.0.1:{port} (Address already in use)")
    assert "SYNCD_PORT" in lines[0]


def test_refused_webhooks_are_logged_with_their_reason(
    sqlite_db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="syncd.receiver")
    with daemon(sqlite_db.url, sqlite_db.engine, run_worker=False) as client:
        assert client.post("/webhooks/shoperti", content=b"[1, 2]").status_code == 400
        assert client.post("/webhooks/shoperti", content=b"not json").status_code == 400
    answered = [r for r in caplog.records if r.getMessage() == "webhook.answered"]
    assert [(r.status, r.reason) for r in answered] == [  # type: ignore[attr-defined]
        (400, "body is not a JSON object"),
        (400, "body is not JSON"),
    ]
