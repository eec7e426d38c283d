"""What an operator sees: /healthz, /readyz, /metrics, the logs and `syncd status`.

The app runs on a real port (``serving``), on each test database, wrapped as
``syncd serve`` wraps it. The Shoperti API, where one is needed, is a stub
served the same way, so the API key travels for real.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from syncd import inbox
from syncd.app import create_app
from syncd.db.engine import make_engine, upgrade
from syncd.db.models import Event
from syncd.errors import DatabaseUnavailable
from syncd.ops import logs, request_id, status
from syncd.state import EVENTS_CURSOR, LAST_RUN, write_state
from tests.factories import EMAIL_A, EMAIL_B, posted_order
from tests.support import (
    STUB_API_KEY,
    Samples,
    StubApi,
    put_event,
    sample,
    scrape,
    serving,
    settings_for,
    wait_for,
)

WEBHOOK_SECRET = "whsec_ops_0b9d3e7f41"


# --- /healthz and /readyz ----------------------------------------------------------------


def test_healthz_and_readyz_on_a_migrated_database(db: Any) -> None:
    app = create_app(settings_for(db.url), db.engine, run_scheduler=False)
    with serving(app) as base:
        health = httpx.get(f"{base}/healthz")
        ready = httpx.get(f"{base}/readyz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert re.fullmatch(r"[0-9a-f]{32}", ready.headers["x-request-id"])


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_readyz_is_503_on_an_unmigrated_database(
    kind: str, fresh_database: Callable[[str], str]
) -> None:
    url = fresh_database(kind)
    engine = make_engine(url)
    try:
        app = create_app(settings_for(url), engine, run_worker=False, run_scheduler=False)
        with serving(app) as base:
            health = httpx.get(f"{base}/healthz")
            ready = httpx.get(f"{base}/readyz")
    finally:
        engine.dispose()
    assert health.status_code == 200
    assert ready.status_code == 503
    assert "syncd db upgrade" in ready.json()["reason"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:{port}/syncd",
        "mysql://root@127.0.0.1:{port}/syncd",
        "sqlite:////nonexistent-directory-for-syncd-tests/syncd.db",
    ],
    ids=["postgresql", "mariadb", "sqlite"],
)
def test_readyz_and_webhooks_are_503_while_the_database_is_down(url: str) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = url.format(port=closed.getsockname()[1])
        engine = make_engine(url)
        try:
            app = create_app(settings_for(url), engine, run_worker=False, run_scheduler=False)
            with serving(app) as base:
                health = httpx.get(f"{base}/healthz", timeout=30)
                ready = httpx.get(f"{base}/readyz", timeout=30)
                webhook = httpx.post(
                    f"{base}/webhooks/shoperti", json=posted_order("evt_down", "o1"), timeout=30
                )
                _, samples = scrape(base)
        finally:
            engine.dispose()
    assert health.status_code == 200
    assert ready.status_code == 503 and "database unavailable" in ready.json()["reason"]
    assert webhook.status_code == 503  # never a 2xx for what was not committed
    assert sample(samples, "syncd_database_up") == 0
    assert sample(samples, "syncd_webhooks_total", store="default", code="503") == 1


# --- /metrics ----------------------------------------------------------------------------


def test_metrics_parse_and_move_as_events_flow(db: Any, tmp_path: Path) -> None:
    config = tmp_path / "stores.toml"
    config.write_text(
        '[[stores]]\nname = "shop-a"\nwebhook_secret = "token-a-123456"\n'
        '[[stores]]\nname = "shop-b"\nwebhook_secret = "token-b-123456"\n'
    )
    settings = settings_for(db.url, SYNCD_CONFIG=str(config))
    a, b = (
        "/webhooks/shoperti/shop-a?token=token-a-123456",
        "/webhooks/shoperti/shop-b?token=token-b-123456",
    )
    malformed = posted_order("evt_bad_total", "o-bad")
    malformed["data"]["total"] = "not money"

    # 1. Receive only (no worker): webhooks are counted, events wait as pending.
    app = create_app(settings, db.engine, run_worker=False, run_scheduler=False)
    with serving(app) as base, httpx.Client(base_url=base) as client:
        _, before = scrape(base)
        assert sample(before, "syncd_webhooks_total", store="shop-a", code="200") is None
        for n in range(3):
            assert client.post(a, json=posted_order(f"evt_a{n}", f"oa{n}")).status_code == 200
        assert client.post(a, json=posted_order("evt_a0", "oa0")).status_code == 200  # duplicate
        assert client.post(
            a, json={"id": "evt_p", "type": "product.updated", "data": {}}
        ).is_success
        assert client.post(a, json=malformed).status_code == 200
        for n in range(2):
            assert client.post(b, json=posted_order(f"evt_b{n}", f"ob{n}")).status_code == 200
        assert client.post("/webhooks/shoperti/shop-a?token=nope", json={}).status_code == 401
        assert client.post(a, content=b"[1, 2]").status_code == 400
        assert client.post("/webhooks/shoperti/shop-z", json={}).status_code == 404
        _, received = scrape(base)
    assert sample(received, "syncd_webhooks_total", store="shop-a", code="200") == 6
    assert sample(received, "syncd_webhooks_total", store="shop-b", code="200") == 2
    assert sample(received, "syncd_webhooks_total", store="shop-a", code="401") == 1
    assert sample(received, "syncd_webhooks_total", store="shop-a", code="400") == 1
    assert sample(received, "syncd_webhooks_total", store="unknown", code="404") == 1
    assert sample(received, "syncd_events_backlog", store="shop-a", status="pending") == 5
    assert sample(received, "syncd_events_backlog", store="shop-b", status="pending") == 2
    assert sample(received, "syncd_events_backlog", store="shop-a", status="failed") == 0
    assert sample(received, "syncd_apply_lag_seconds_count", store="shop-a") is None

    # 2. A daemon with its worker drains the backlog: outcomes, lag, gauges move.
    app = create_app(settings, db.engine, run_scheduler=False)
    with serving(app) as base:

        def drained() -> Samples | None:
            _, now = scrape(base)
            pending = [
                sample(now, "syncd_events_backlog", store=store, status="pending")
                for store in ("shop-a", "shop-b")
            ]
            # The worker counts a batch just after committing it: wait for both.
            counted = sum(
                value for (name, _), value in now.items() if name == "syncd_events_processed_total"
            )
            return now if pending == [0, 0] and counted == 7 else None

        applied = wait_for(drained, message="the worker to drain the backlog")
    assert applied is not None
    processed = "syncd_events_processed_total"
    assert sample(applied, processed, store="shop-a", type="order.created", status="applied") == 3
    assert sample(applied, processed, store="shop-a", type="order.created", status="failed") == 1
    assert sample(applied, processed, store="shop-a", type="product.updated", status="ignored") == 1
    assert sample(applied, processed, store="shop-b", type="order.created", status="applied") == 2
    assert sample(applied, "syncd_apply_lag_seconds_count", store="shop-a") == 3
    assert sample(applied, "syncd_apply_lag_seconds_count", store="shop-b") == 2
    assert sample(applied, "syncd_events_backlog", store="shop-a", status="failed") == 1
    assert sample(applied, "syncd_events_backlog", store="shop-b", status="failed") == 0
    assert sample(applied, "syncd_database_up") == 1
    assert sample(applied, "syncd_worker_running") == 1


# --- logs, and what must never show ---------------------------------------------------------


def test_no_secret_or_email_in_logs_metrics_or_status_and_a_request_id_per_webhook(
    db: Any, captured_logs: io.StringIO
) -> None:
    api = StubApi(STUB_API_KEY)
    known = posted_order("evt_known", "o-known", email=EMAIL_A)
    known["data"]["note"] = f"call {EMAIL_B}"
    api.events["evt_known"] = known
    leaky_type = {"id": "evt_leak", "type": f"leak.{EMAIL_B}", "data": {"email": EMAIL_B}}
    api.events["evt_leak"] = leaky_type
    posts: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (f"?token={WEBHOOK_SECRET}", known, {"X-Request-ID": "req-fixed-0001"}),
        (f"?token={WEBHOOK_SECRET}", posted_order("evt_unknown", "o-x", email=EMAIL_B), {}),
        (f"?token={WEBHOOK_SECRET}", leaky_type, {"X-Request-ID": f"<{EMAIL_A}>"}),
        (f"?token={EMAIL_A}", known, {}),  # wrong token: 401
        (f"?token={WEBHOOK_SECRET[:-1]}", known, {}),  # almost the token: 401
    ]
    with serving(api.app()) as api_base:
        settings = settings_for(
            db.url,
            SYNCD_API_URL=f"{api_base}/v1",
            SYNCD_API_KEY=STUB_API_KEY,
            SYNCD_WEBHOOK_SECRET=WEBHOOK_SECRET,
            SYNCD_RECONCILE_INTERVAL="3600",
        )
        app = create_app(settings, db.engine)
        with serving(app) as base, httpx.Client(base_url=base) as client:
            answers = [
                client.post(f"/webhooks/shoperti{query}", json=body, headers=headers)
                for query, body, headers in posts
            ]

            def settled() -> Samples | None:
                _, now = scrape(base)
                done = sample(now, "syncd_reconcile_runs_total", store="default", outcome="ok")
                pending = sample(now, "syncd_events_backlog", store="default", status="pending")
                return now if done == 1 and pending == 0 else None

            samples = wait_for(settled, message="verification, apply and a reconcile run")
            assert samples is not None
            metrics_text, _ = scrape(base)
    assert [answer.status_code for answer in answers] == [200, 200, 200, 401, 401]
    # The key was really used, so "not in the logs" means something.
    assert api.authorizations == {f"Bearer {STUB_API_KEY}"}
    calls = "syncd_api_calls_total"
    assert (sample(samples, calls, store="default", endpoint="events.get", status="200") or 0) >= 2
    assert sample(samples, calls, store="default", endpoint="events.get", status="404") == 1
    with db.engine.connect() as conn:
        outcomes = {row.id: row.status for row in conn.execute(select(Event.id, Event.status))}
    assert outcomes == {"evt_known": "applied", "evt_unknown": "rejected", "evt_leak": "ignored"}

    lines = captured_logs.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    answered = [r for r in records if r["event"] == "webhook.answered"]
    assert [r["status"] for r in answered] == [200, 200, 200, 401, 401]
    ids = [r.get("request_id", "") for r in answered]
    assert ids[0] == "req-fixed-0001" == answers[0].headers["x-request-id"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids[1:]), ids
    assert len(set(ids)) == len(ids)
    assert any(r["event"] == "reconcile.finished" for r in records)

    stores = status.collect(db.engine, settings)
    shown = {
        "logs": "\n".join(lines),
        "metrics": metrics_text,
        "status": json.dumps(stores) + status.render_text(stores),
    }
    for where, text in shown.items():
        for value in (STUB_API_KEY, WEBHOOK_SECRET, EMAIL_A, EMAIL_B, "Ana", "CDMX"):
            assert value not in text, f"{value!r} shows in {where}"
        assert logs.EMAIL.search(text) is None, where


def _record(message: str, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord("syncd.test", logging.WARNING, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_formatters_keep_to_the_allow_list_and_mask_secrets_and_emails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logs, "_hidden", set())
    logs.hide(["tok-abcdef-123", "short", None])
    record = _record(
        "webhook.answered",
        store="shop",
        status=200,
        payload={"email": EMAIL_A},
        email=EMAIL_A,
        error=f"customer {EMAIL_A} said tok-abcdef-123",
        stores=["a", EMAIL_B],
    )
    try:
        raise ValueError(f"row for {EMAIL_A}")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["event"] == "webhook.answered" and line["level"] == "warning"
    assert line["store"] == "shop" and line["status"] == 200
    assert "payload" not in line and "email" not in line
    assert line["error"] == "customer <e-mail> said <secret>"
    assert line["stores"] == ["a", "<e-mail>"]
    assert line["exception"] == "ValueError"  # the class, never the message
    text = logs.TextFormatter().format(record)
    assert "store=shop" in text and "exception=ValueError" in text
    assert EMAIL_A not in text and "tok-abcdef-123" not in text and "payload" not in text
    # Values too short to be a real secret are not masked everywhere.
    assert logs.scrub("a short word") == "a short word"

    token = request_id.current.set("rid-12345678")
    try:
        inside = json.loads(logs.JsonFormatter().format(_record("x", request_id="raw header")))
    finally:
        request_id.current.reset(token)
    assert inside["request_id"] == "rid-12345678"
    outside = json.loads(logs.JsonFormatter().format(_record("x", request_id=None)))
    assert "request_id" not in outside


def test_json_off_a_terminal_and_text_on_one() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    leader, follower = os.openpty()
    try:
        with io.StringIO() as pipe_like, open(follower, "w", closefd=True) as terminal:
            logs.setup("INFO", stream=pipe_like)
            logging.getLogger("syncd.test").info("test.line", extra={"store": "s"})
            assert json.loads(pipe_like.getvalue()) | {"ts": None} == {
                "ts": None,
                "level": "info",
                "logger": "syncd.test",
                "event": "test.line",
                "store": "s",
            }
            logs.setup("INFO", stream=terminal)
            assert isinstance(root.handlers[0].formatter, logs.TextFormatter)
            logging.getLogger("syncd.test").info("test.line", extra={"store": "s"})
            terminal.flush()
            shown = os.read(leader, 4096).decode()
        assert re.match(r"\d\d:\d\d:\d\d info +test\.line store=s", shown), shown
    finally:
        os.close(leader)
        root.handlers[:], level = saved
        root.setLevel(level)


# --- syncd status ---------------------------------------------------------------------------


def _put(engine: Engine, event: dict[str, Any], *, state: str, minutes_ago: float = 0) -> None:
    error = f"data.total: not a decimal amount ({EMAIL_A})" if state == "failed" else None
    put_event(engine, event, state=state, minutes_ago=minutes_ago, error=error)


def _last_run(engine: Engine, *, error: str | None, success_ago: float | None, **more: Any) -> None:
    now = inbox.utcnow()
    run = {
        "mode": "events",
        "started_at": (now - timedelta(seconds=5)).isoformat(),
        "finished_at": now.isoformat(),
        "events_seen": 0,
        "found": 0,
        "error": error,
        "last_success_at": (now - timedelta(seconds=success_ago)).isoformat()
        if success_ago is not None
        else None,
        **more,
    }
    write_state(engine, "default", LAST_RUN, run)


def test_status_facts_and_exit_codes(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(
        db.url,
        SYNCD_API_URL="https://api.example/v1",
        SYNCD_API_KEY=STUB_API_KEY,
        SYNCD_RECONCILE_INTERVAL="60",
    )
    assert status.print_status(settings, as_json=True) == 0
    empty = json.loads(capsys.readouterr().out)
    assert empty["ok"] is True
    assert empty["stores"][0]["counts"] == dict.fromkeys(status.STATUSES, 0)
    assert empty["stores"][0]["last_received_at"] is None

    _put(db.engine, posted_order("evt_1", "o1"), state="applied", minutes_ago=3)
    _put(db.engine, posted_order("evt_2", "o2"), state="pending", minutes_ago=2)
    _put(db.engine, posted_order("evt_3", "o3"), state="rejected", minutes_ago=1)
    write_state(db.engine, "default", EVENTS_CURSOR, {"at": "2026-03-01T16:00:00+00:00"})
    _last_run(db.engine, error=None, success_ago=30, found=4)
    assert status.print_status(settings, as_json=True) == 0
    entry = json.loads(capsys.readouterr().out)["stores"][0]
    assert entry["counts"] == {"pending": 1, "applied": 1, "ignored": 0, "rejected": 1, "failed": 0}
    assert entry["last_received_at"] is not None and entry["last_applied_at"] is not None
    assert 110 <= entry["apply_lag_seconds"] < 600  # the pending event is two minutes old
    assert entry["reconcile_cursor"] == "2026-03-01T16:00:00+00:00"
    assert entry["reconcile_last_run"]["found"] == 4 and entry["problems"] == []

    # Reconcile failing for less than two intervals: not yet an operator's problem.
    _last_run(db.engine, error="ApiUnavailable: timed out", success_ago=100)
    assert status.print_status(settings, as_json=False) == 0
    assert "error ApiUnavailable: timed out" in capsys.readouterr().out
    # For more than two intervals (60 s each): it is.
    _last_run(db.engine, error="ApiUnavailable: timed out", success_ago=150)
    assert status.print_status(settings, as_json=False) == 1
    assert "PROBLEM        reconcile has been failing since" in capsys.readouterr().out
    # Never succeeded: counted from the first failure known.
    never = inbox.utcnow() - timedelta(seconds=200)
    _last_run(
        db.engine, error="ApiAuthError: 401", success_ago=None, failing_since=never.isoformat()
    )
    assert status.print_status(settings, as_json=True) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False
    _last_run(db.engine, error=None, success_ago=1)
    assert status.print_status(settings, as_json=True) == 0
    capsys.readouterr()

    # A failed event needs an operator; its error text (customer data) is not shown.
    _put(db.engine, posted_order("evt_4", "o4"), state="failed")
    assert status.print_status(settings, as_json=True) == 1
    out = capsys.readouterr().out
    assert json.loads(out)["stores"][0]["counts"]["failed"] == 1
    assert "failed event(s)" in out and EMAIL_A not in out and STUB_API_KEY not in out


def test_status_command_exit_codes_and_one_line_errors(
    tmp_path: Path, fresh_database: Callable[[str], str]
) -> None:
    url = fresh_database("sqlite")  # the command line is the same on every database
    upgrade(url)

    def syncd_status(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "SYNCD_DATABASE_URL": url}
        return subprocess.run(
            [sys.executable, "-m", "syncd", "status", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    healthy = syncd_status(url, "--json")
    assert healthy.returncode == 0, healthy.stderr
    assert json.loads(healthy.stdout)["stores"][0]["store"] == "default"
    engine = make_engine(url)
    try:
        _put(engine, posted_order("evt_f", "of"), state="failed")
    finally:
        engine.dispose()
    failing = syncd_status(url)
    assert failing.returncode == 1 and "PROBLEM" in failing.stdout

    down = syncd_status("postgresql://nobody@127.0.0.1:1/syncd")
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1 and down.stderr.startswith(
        "syncd: cannot use the database (postgresql at 127.0.0.1:1"
    )
    assert "Connection refused" in down.stderr  # the driver's cause, not just its kind


def test_status_reports_an_unreadable_database_in_one_line() -> None:
    settings = settings_for("mysql://nobody:pw-Sekr3t@127.0.0.1:1/syncd")
    with pytest.raises(DatabaseUnavailable) as caught:
        status.read(settings)
    text = str(caught.value)
    assert "\n" not in text and "pw-Sekr3t" not in text
    assert "Can't connect" in text and "check that it is running" in text


def test_event_types_become_labels_only_in_a_known_shape() -> None:
    from syncd.ops.metrics import type_label

    assert type_label("order.paid") == "order.paid"
    assert type_label(f"leak.{EMAIL_A}") == "other"
    assert type_label("x" * 40 + ".y") == "other"
