"""`syncd events list / show / retry`, on each test database.

The command runs as a user runs it (``syncd.cli.main`` with the configured
database in the environment); a retried event is then picked up by a real
daemon: one started after the retry, and one already running during it. A
rejected event that is retried goes through the API's verification again
(a stub API served on a real port, as in test_ops).
"""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from syncd import inbox
from syncd.app import create_app
from syncd.cli import main
from syncd.db.models import Event, Order
from syncd.ops import status
from tests.factories import EMAIL_A, posted_order
from tests.support import STUB_API_KEY, StubApi, put_event, serving, settings_for, wait_for


def rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.id: row for row in conn.execute(select(Event))}


def syncd(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str, *args: str
) -> tuple[int, str]:
    monkeypatch.setenv("SYNCD_DATABASE_URL", url)
    # The command sets logging up for itself, as its own process would; the
    # test's handlers (a daemon's log lines being captured) are put back.
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        code = main(["events", *args])
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    out, err = capsys.readouterr()
    return code, out + err


def test_list_show_and_retry(
    db: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SYNCD_API_URL", "SYNCD_API_KEY", "SYNCD_CONFIG", "SYNCD_STORE"):
        monkeypatch.delenv(name, raising=False)
    note = "gift wrap for Ana, leave at the door"
    failing = posted_order("evt_f1", "o1")
    failing["data"]["note"] = note
    put_event(db.engine, failing, state="failed", minutes_ago=5, verified=True, attempts=8,
        error=f"data.total: not a decimal amount ({EMAIL_A})")  # fmt: skip
    put_event(db.engine, posted_order("evt_f2", "o2", event_type="order.paid"), state="failed",
        minutes_ago=4, verified=True, attempts=3, error="database error: deadlock")  # fmt: skip
    put_event(db.engine, posted_order("evt_r1", "o3"), state="rejected", minutes_ago=3, attempts=1,
        verified=True, error="the API does not know this event id")  # fmt: skip
    put_event(
        db.engine, posted_order("evt_a1", "o4"), state="applied", minutes_ago=2, verified=True
    )
    put_event(db.engine, posted_order("evt_p1", "o5"), state="pending", minutes_ago=1)

    # list: newest first, the columns an operator needs, no payload, no e-mail.
    code, out = syncd(capsys, monkeypatch, db.url, "list")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["STORE", "ID", "TYPE", "RESOURCE", "STATUS", "ATTEMPTS"]
    assert [line.split()[1] for line in lines[1:]] == [
        "evt_p1",
        "evt_a1",
        "evt_r1",
        "evt_f2",
        "evt_f1",
    ]
    assert "data.total: not a decimal amount (<e-mail>)" in out
    assert EMAIL_A not in out and note not in out and "Ana" not in out
    code, out = syncd(capsys, monkeypatch, db.url, "list", "--status", "failed", "--json")
    listed = json.loads(out)
    assert [e["id"] for e in listed] == ["evt_f2", "evt_f1"]
    assert set(listed[0]) == {
        "store", "id", "type", "resource_id", "status", "attempts", "received_at", "last_error"
    }  # fmt: skip
    assert listed[1]["resource_id"] == "o1" and listed[1]["attempts"] == 8
    code, out = syncd(capsys, monkeypatch, db.url, "list", "--type", "order.paid", "--json")
    assert [e["id"] for e in json.loads(out)] == ["evt_f2"]
    since = (inbox.utcnow() - timedelta(minutes=2, seconds=30)).isoformat()
    code, out = syncd(capsys, monkeypatch, db.url, "list", "--since", since, "--json")
    assert [e["id"] for e in json.loads(out)] == ["evt_p1", "evt_a1"]
    code, out = syncd(capsys, monkeypatch, db.url, "list", "--limit", "1", "--json")
    assert [e["id"] for e in json.loads(out)] == ["evt_p1"]
    code, out = syncd(capsys, monkeypatch, db.url, "list", "--store", "nope")
    assert code == 2 and "unknown store 'nope'" in out

    # show: the payload only on request.
    code, out = syncd(capsys, monkeypatch, db.url, "show", "evt_f1")
    assert code == 0 and "status           failed" in out and "verified         True" in out
    assert note not in out and EMAIL_A not in out and "payload" not in out
    code, out = syncd(capsys, monkeypatch, db.url, "show", "evt_f1", "--payload", "--json")
    shown = json.loads(out)
    assert shown["payload"]["data"]["note"] == note and shown["attempts"] == 8
    code, out = syncd(capsys, monkeypatch, db.url, "show", "evt_nope")
    assert code == 1 and out == "syncd: no event 'evt_nope' in store(s) default\n"

    # retry --dry-run: counts, changes nothing.
    before = rows(db.engine)
    code, out = syncd(capsys, monkeypatch, db.url, "retry", "--status", "failed", "--dry-run")
    assert code == 0 and out == "would move 2 event(s) back to pending (2 failed)\n"
    assert rows(db.engine) == before

    # retry by id: only failed/rejected ones move; an unknown id is an error.
    code, out = syncd(capsys, monkeypatch, db.url, "retry", "--id", "evt_r1", "evt_a1", "evt_x")
    assert code == 1
    assert out.splitlines() == [
        "moved 1 event(s) back to pending (1 rejected)",
        "left 1 event(s) that are neither failed nor rejected: evt_a1",
        "no such event: evt_x",
    ]
    after = rows(db.engine)
    assert after["evt_r1"].status == "pending" and after["evt_r1"].attempts == 0
    assert after["evt_r1"].verified is False  # to be verified again
    assert after["evt_a1"].status == "applied"

    # retry --status failed: both, attempts 0, still verified (the API's copy).
    code, out = syncd(capsys, monkeypatch, db.url, "retry", "--status", "failed")
    assert code == 0 and out == "moved 2 event(s) back to pending (2 failed)\n"
    after = rows(db.engine)
    for event_id in ("evt_f1", "evt_f2"):
        row = after[event_id]
        assert (row.status, row.attempts, row.verified) == ("pending", 0, True)
        assert row.next_attempt_at is None and row.processed_at is None
    code, out = syncd(capsys, monkeypatch, db.url, "retry", "--status", "failed")
    assert code == 0 and out == "moved 0 event(s) back to pending\n"

    # Neither or both of --id and --status: argparse refuses.
    with pytest.raises(SystemExit) as refused:
        main(["events", "retry"])
    assert refused.value.code == 2
    capsys.readouterr()


def test_status_advice_names_the_events_commands(db: Any) -> None:
    settings = settings_for(db.url)
    put_event(db.engine, posted_order("evt_f", "of"), state="failed")
    put_event(db.engine, posted_order("evt_r", "or"), state="rejected")
    entry = status.collect(db.engine, settings)[0]
    assert entry["problems"] == [
        "1 failed event(s): see `syncd events list --status failed --store default`, fix the "
        "cause, then `syncd events retry --status failed --store default`"
    ]
    assert "`syncd events retry --status rejected --store default`" in entry["advice"][0]
    assert "NOTE           1 rejected event(s)" in status.render_text([entry])


def test_retried_events_are_applied_by_the_next_daemon_and_by_a_running_one(
    db: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify=off: a failed event whose cause is gone (here: the payload was
    fixed in place) is applied once retried, with or without a daemon running."""
    for name in ("SYNCD_API_URL", "SYNCD_API_KEY", "SYNCD_CONFIG", "SYNCD_STORE"):
        monkeypatch.delenv(name, raising=False)
    put_event(
        db.engine, posted_order("evt_1", "o1"), state="failed", attempts=8, error="was broken"
    )
    put_event(
        db.engine, posted_order("evt_2", "o2"), state="failed", attempts=8, error="was broken"
    )

    # No daemon: retry, then start one; it applies the event.
    code, out = syncd(capsys, monkeypatch, db.url, "retry", "--id", "evt_1")
    assert code == 0 and out.startswith("moved 1 ")
    app = create_app(settings_for(db.url), db.engine, run_scheduler=False)
    with serving(app) as base:
        wait_for(lambda: rows(db.engine)["evt_1"].status == "applied", message="evt_1 applied")
        assert rows(db.engine)["evt_2"].status == "failed"  # not retried: left alone
        # A daemon running: retry; its worker picks the event up at its next poll.
        code, out = syncd(capsys, monkeypatch, db.url, "retry", "--status", "failed")
        assert code == 0 and out.startswith("moved 1 ")
        wait_for(lambda: rows(db.engine)["evt_2"].status == "applied", message="evt_2 applied")
        assert httpx.get(f"{base}/healthz").status_code == 200
    after = rows(db.engine)
    assert after["evt_2"].attempts == 1 and after["evt_2"].last_error is None
    with db.engine.connect() as conn:
        assert set(conn.scalars(select(Order.id))) == {"o1", "o2"}


def test_a_retried_rejected_event_is_verified_again_and_giving_up_logs_one_warning(
    db: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: io.StringIO,
) -> None:
    api = StubApi(STUB_API_KEY)
    late = posted_order("evt_late", "o-late")  # the API did not know it yet when posted
    unknown = posted_order("evt_unknown", "o-unknown")
    broken = posted_order("evt_broken", "o-broken", email=EMAIL_A)
    broken["data"]["total"] = "not money"
    api.events["evt_broken"] = broken
    with serving(api.app()) as api_base:
        env = {"SYNCD_API_URL": f"{api_base}/v1", "SYNCD_API_KEY": STUB_API_KEY}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = settings_for(db.url, **env, SYNCD_RECONCILE_INTERVAL="0")
        app = create_app(settings, db.engine, run_scheduler=False)
        with serving(app) as base, httpx.Client(base_url=base) as client:
            for event in (late, unknown, broken):
                assert client.post("/webhooks/shoperti", json=event).status_code == 200
            wait_for(
                lambda: {r.status for r in rows(db.engine).values()} == {"rejected", "failed"},
                message="two rejected, one failed",
            )
            assert rows(db.engine)["evt_late"].status == "rejected"
            api.events["evt_late"] = late  # now the API knows it
            code, out = syncd(capsys, monkeypatch, db.url, "retry", "--status", "rejected")
            assert code == 0 and out == "moved 2 event(s) back to pending (2 rejected)\n"
            wait_for(
                lambda: (
                    rows(db.engine)["evt_late"].status == "applied"
                    and rows(db.engine)["evt_unknown"].status == "rejected"
                ),
                message="evt_late applied after verification, evt_unknown rejected again",
            )
    after = rows(db.engine)
    assert after["evt_late"].verified is True and after["evt_unknown"].attempts == 1

    records = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    gave_up = [r for r in records if r["event"] in ("event.failed", "event.rejected")]
    assert {(r["event"], r["event_id"]) for r in gave_up} == {
        ("event.rejected", "evt_late"),
        ("event.rejected", "evt_unknown"),
        ("event.failed", "evt_broken"),
    }
    assert len(gave_up) == 4  # evt_unknown twice: once per rejection
    for record in gave_up:
        assert record["level"] == "warning" and record["event_type"] == "order.created"
        assert record["reason"] and record["store"] == "default"
    assert "the API does not know this event id" in {r["reason"] for r in gave_up}
    text = captured_logs.getvalue()
    assert EMAIL_A not in text
    assert "o-broken" not in text  # nothing of the payload but the type


def test_an_unreachable_database_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for args in (["list"], ["show", "evt_1"], ["retry", "--status", "failed"]):
        code, out = syncd(capsys, monkeypatch, "postgresql://nobody@127.0.0.1:1/syncd", *args)
        assert code == 1 and out.count("\n") == 1 and out.startswith("syncd: "), out
        assert "nobody" not in out
