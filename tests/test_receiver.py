"""The webhook receiver over real HTTP: every answer of docs/api.md §3.

The daemon's app runs under uvicorn on a free port (``support.serving``) and
is spoken to with httpx or, where the point is what the server does before
the request ends, with a raw socket. Every test that stores something runs on
SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import Engine, select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from syncd.app import create_app
from syncd.config import load_settings
from syncd.db.engine import make_engine, upgrade
from syncd.db.models import metadata
from syncd.receiver import WebhookEndpoint, webhook_store
from syncd.worker import apply_pending
from tests.factories import order_event
from tests.support import assert_error, daemon, serving, stored, wait_for

KINDS = ("sqlite", "postgresql", "mariadb")
EVENTS = metadata.tables["events"]
TOKEN = "whsec_9fQ2xL7pTz"


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def statuses(engine: Engine) -> dict[str, str]:
    return {row["id"]: row["status"] for row in stored(engine)}


# --- 200 ---------------------------------------------------------------------------------


def test_an_event_is_committed_before_the_200(db: Any) -> None:
    event = order_event("evt_1", type="order.paid")
    with daemon(db.url, db.engine, run_worker=False) as client:
        response = client.post("/webhooks/shoperti", content=body(event))
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "id": "evt_1"}
        [row] = stored(db.engine)  # read right after the answer, no waiting
    assert (row["store"], row["id"], row["type"], row["resource"], row["resource_id"]) == (
        "default",
        "evt_1",
        "order.paid",
        "order",
        "ord_1",
    )
    assert (row["source"], row["status"], row["verified"], row["attempts"]) == (
        "webhook",
        "pending",
        False,
        0,
    )
    assert row["payload"] == event
    assert row["processed_at"] is None

    settings = load_settings({"SYNCD_DATABASE_URL": db.url})
    report = apply_pending(db.engine, settings.store(), limit=10, max_attempts=3)
    assert report.applied == 1
    assert statuses(db.engine) == {"evt_1": "applied"}


def test_the_worker_applies_webhook_events_within_seconds(db: Any) -> None:
    events = [order_event(f"evt_{n}", order_id=f"ord_{n}") for n in range(5)]
    with daemon(db.url, db.engine) as client:
        for event in events:
            assert client.post("/webhooks/shoperti", content=body(event)).status_code == 200
        wait_for(
            lambda: set(statuses(db.engine).values()) == {"applied"},
            timeout=5,
            message="the worker to apply the webhook events",
        )
    with db.engine.connect() as conn:
        orders = conn.execute(text("SELECT id FROM orders ORDER BY id")).scalars().all()
    assert orders == [f"ord_{n}" for n in range(5)]
    assert {row["source"] for row in stored(db.engine)} == {"webhook"}


def test_a_duplicate_gets_200_and_changes_nothing(db: Any) -> None:
    first = order_event("evt_1", total="116.00")
    again = order_event("evt_1", total="999.00", note="a forged second copy")
    with daemon(db.url, db.engine, run_worker=False) as client:
        assert client.post("/webhooks/shoperti", content=body(first)).status_code == 200
        before = stored(db.engine)
        response = client.post("/webhooks/shoperti", content=body(again))
        assert (response.status_code, response.json()["id"]) == (200, "evt_1")
        response = client.post("/webhooks/shoperti", content=body(first))
        assert response.status_code == 200
    assert stored(db.engine) == before
    assert before[0]["payload"]["data"]["total"] == "116.00"


def test_concurrent_deliveries_are_all_committed(db: Any) -> None:
    events = [order_event(f"evt_{n % 30}", order_id=f"ord_{n % 30}") for n in range(60)]
    with daemon(db.url, db.engine, run_worker=False) as client:

        def post(event: dict[str, Any]) -> int:
            return client.post("/webhooks/shoperti", content=body(event)).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            codes = list(pool.map(post, events))
    assert codes == [200] * 60
    assert sorted(row["id"] for row in stored(db.engine)) == sorted(f"evt_{n}" for n in range(30))


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"],
)
def test_the_content_type_is_not_trusted(db: Any, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    with daemon(db.url, db.engine, run_worker=False) as client:
        response = client.post(
            "/webhooks/shoperti", content=body(order_event("e")), headers=headers
        )
    assert response.status_code == 200
    assert statuses(db.engine) == {"e": "pending"}


def test_an_unknown_event_type_is_stored_then_ignored(db: Any) -> None:
    event = {"id": "evt_x", "type": "shop.updated", "created_at": None, "data": {"id": "s1"}}
    with daemon(db.url, db.engine) as client:
        assert client.post("/webhooks/shoperti", content=body(event)).status_code == 200
        wait_for(lambda: statuses(db.engine) == {"evt_x": "ignored"}, timeout=5)
    [row] = stored(db.engine)
    assert (row["resource"], row["resource_id"], row["source"]) == ("shop", "s1", "webhook")


def test_a_malformed_event_with_an_id_and_a_type_is_kept_and_fails_alone(db: Any) -> None:
    # docs/api.md §3: 400 only for a body that is not an object or has no id or type.
    bad_time = order_event("evt_bad_time", order_id="ord_1") | {"created_at": "ayer, 6 pm"}
    bad_data = {"id": "evt_bad_data", "type": "order.paid", "data": ["ord_1"]}
    bad_year = order_event("evt_bad_year") | {"created_at": "9999-12-31T23:00:00-06:00"}
    bad_money = order_event("evt_bad_money", order_id="ord_2", total="12,50")
    good = order_event("evt_good", order_id="ord_3")
    with daemon(db.url, db.engine) as client:
        for event in (bad_time, bad_data, bad_year, bad_money, good):
            response = client.post("/webhooks/shoperti", content=body(event))
            assert response.status_code == 200, response.text
        wait_for(lambda: "pending" not in statuses(db.engine).values(), timeout=5)
    errors = {row["id"]: (row["status"], row["last_error"]) for row in stored(db.engine)}
    assert errors == {
        "evt_bad_time": ("failed", "created_at: not an ISO 8601 timestamp"),
        "evt_bad_data": ("failed", "data: expected an object"),
        "evt_bad_year": ("failed", "created_at: timestamp out of range"),
        "evt_bad_money": ("failed", "data.total: not a decimal amount"),
        "evt_good": ("applied", None),
    }
    [row] = [row for row in stored(db.engine) if row["id"] == "evt_bad_time"]
    assert (row["created_at"], row["resource_id"], row["payload"]) == (None, "ord_1", bad_time)


def test_ids_differing_only_in_case_are_two_events(db: Any) -> None:
    # Ids are compared exactly on every database (a binary collation on MariaDB).
    with daemon(db.url, db.engine) as client:
        for event_id in ("evt_AbC", "evt_abc", "evt_ABC", "evt_AbC"):
            event = order_event(event_id, order_id=event_id.replace("evt", "ord"))
            assert client.post("/webhooks/shoperti", content=body(event)).status_code == 200
        wait_for(
            lambda: (
                statuses(db.engine) == dict.fromkeys(("evt_ABC", "evt_AbC", "evt_abc"), "applied")
            ),
            timeout=5,
            message="three events applied",
        )
    with db.engine.connect() as conn:
        orders = conn.execute(text("SELECT id FROM orders")).scalars().all()
        items = conn.execute(text("SELECT order_id FROM order_line_items")).scalars().all()
        found = conn.execute(text("SELECT id FROM events WHERE id = 'evt_abc'")).scalars().all()
        joined = (
            conn.execute(
                text(
                    "SELECT e.id FROM events e JOIN orders o ON o.store = e.store "
                    "AND o.last_event_id = e.id WHERE o.id = 'ord_AbC'"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(orders) == sorted(items) == ["ord_ABC", "ord_AbC", "ord_abc"]
    assert (found, joined) == (["evt_abc"], ["evt_AbC"])


def test_a_nul_character_is_stored_as_a_replacement_character(db: Any) -> None:
    # PostgreSQL's text and JSONB cannot hold U+0000: every database gets U+FFFD instead.
    event = order_event(
        "evt_nul",
        note="línea 1\u0000línea 2",
        customer={"id": "cus_1", "first_name": "Ana\u0000", "tags": ["\u0000vip"]},
        line_items=[{"id": "li_1", "quantity": 1, "title": "\u0000", "price": "1", "total": "1"}],
    )
    event["data"]["gift\u0000card"] = {"code": "\u0000\u0000"}
    scrubbed = json.loads(json.dumps(event).replace("\\u0000", "\\ufffd"))
    assert scrubbed["data"]["note"] == "línea 1\ufffdlínea 2"
    with daemon(db.url, db.engine) as client:
        response = client.post("/webhooks/shoperti", content=body(event))
        assert (response.status_code, response.json()) == (200, {"status": "ok", "id": "evt_nul"})
        again = client.post("/webhooks/shoperti", content=body(event))  # a redelivery
        assert again.status_code == 200
        wait_for(lambda: statuses(db.engine) == {"evt_nul": "applied"}, timeout=5)
    [row] = stored(db.engine)
    assert row["payload"] == scrubbed
    orders, customers = metadata.tables["orders"], metadata.tables["customers"]
    items = metadata.tables["order_line_items"]
    with db.engine.connect() as conn:
        note, raw = conn.execute(select(orders.c.note, orders.c.raw)).one()
        name, tags = conn.execute(select(customers.c.first_name, customers.c.tags)).one()
        title = conn.execute(select(items.c.title)).scalar_one()
    assert note == "línea 1\ufffdlínea 2"
    assert (name, tags, title) == ("Ana\ufffd", "\ufffdvip", "\ufffd")
    assert raw == scrubbed["data"] and raw["gift\ufffdcard"] == {"code": "\ufffd\ufffd"}


# --- 400 ---------------------------------------------------------------------------------

NOT_EVENTS = {
    "not JSON": b"id=evt_1&type=order.paid",
    "truncated JSON": b'{"id": "evt_1", "type": ',
    "empty body": b"",
    "JSON array": body([order_event("evt_1")]),
    "JSON string": body("evt_1"),
    "JSON null": b"null",
    "no id": body({"type": "order.paid", "data": {"id": "ord_1"}}),
    "empty id": body({"id": "  ", "type": "order.paid"}),
    "no type": body({"id": "evt_1", "data": {"id": "ord_1"}}),
    "type not a string": body({"id": "evt_1", "type": ["order.paid"]}),
}


def test_bodies_that_are_not_events_get_400(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False) as client:
        for case, content in NOT_EVENTS.items():
            response = client.post("/webhooks/shoperti", content=content)
            assert response.status_code == 400, case
            assert_error(response, 400)
        # The server is fine afterwards: a good event still gets in.
        assert client.post("/webhooks/shoperti", content=body(order_event("ok"))).status_code == 200
    assert statuses(db.engine) == {"ok": "pending"}


# --- 401 ---------------------------------------------------------------------------------


def test_a_missing_or_wrong_token_gets_401_and_stores_nothing(db: Any) -> None:
    event = body(order_event("evt_1"))
    with daemon(db.url, db.engine, run_worker=False, SYNCD_WEBHOOK_SECRET=TOKEN) as client:
        for params in ({}, {"token": ""}, {"token": "wrong"}, {"token": TOKEN + "x"}):
            response = client.post("/webhooks/shoperti", content=event, params=params)
            reason = assert_error(response, 401)
            assert TOKEN not in response.text and TOKEN not in reason
        headers = {"authorization": f"Bearer {TOKEN}"}  # only the query parameter counts
        assert client.post("/webhooks/shoperti", content=event, headers=headers).status_code == 401
        assert stored(db.engine) == []
        ok = client.post("/webhooks/shoperti", content=event, params={"token": TOKEN})
        assert ok.status_code == 200
    assert statuses(db.engine) == {"evt_1": "pending"}


def test_the_token_is_checked_before_the_body_is_read(db: Any) -> None:
    with daemon(db.url, db.engine, SYNCD_WEBHOOK_SECRET=TOKEN, SYNCD_MAX_BODY_BYTES="10") as client:
        response = client.post("/webhooks/shoperti", content=b"x" * 100)
    assert_error(response, 401)


# --- 404, 405 ----------------------------------------------------------------------------


def test_unknown_store_and_path_get_404(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False) as client:
        event = body(order_event("evt_1"))
        assert_error(client.post("/webhooks/shoperti/nope", content=event), 404)
        assert_error(client.post("/webhooks/shopify", content=event), 404)
        assert_error(client.get("/nothing/here"), 404)
        # The default store answers on its own name too.
        assert client.post("/webhooks/shoperti/default", content=event).status_code == 200
    assert [(row["store"], row["id"]) for row in stored(db.engine)] == [("default", "evt_1")]


@pytest.mark.parametrize(
    ("path", "store"),
    [
        ("/webhooks/shoperti", ""),
        ("/webhooks/shoperti/norte", "norte"),
        ("/webhooks/shoperti/", None),
        ("/webhooks/shoperti/a/b", None),
        ("/webhooks/shopertix", None),
        ("/x/webhooks/shoperti", None),
        ("/healthz", None),
    ],
)
def test_the_webhook_lane_takes_exactly_the_routes_paths(path: str, store: str | None) -> None:
    assert webhook_store(path) == store


def test_webhook_paths_the_lane_leaves_to_the_routes_answer_as_before(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False) as client:
        event = body(order_event("evt_1"))
        for path in ("/webhooks/shoperti/", "/webhooks/shoperti/default/x"):
            answer = client.post(path, content=event)
            assert assert_error(answer, 404) == "not found"  # never a 307 (docs/api.md)
            assert answer.headers["x-request-id"]
        answer = client.post(
            "/webhooks/shoperti/default", content=event, headers={"X-Request-ID": "req-lane-0001"}
        )
        assert answer.status_code == 200
        assert answer.headers["x-request-id"] == "req-lane-0001"
    assert [row["id"] for row in stored(db.engine)] == ["evt_1"]


def test_an_unexpected_error_in_the_lane_answers_503_and_is_raised_on(
    sqlite_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(WebhookEndpoint, "_handle", broken)
    settings = load_settings({"SYNCD_DATABASE_URL": sqlite_db.url})
    app = create_app(settings, sqlite_db.engine, run_worker=False, run_scheduler=False)

    async def post(raise_app_exceptions: bool) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://syncd") as client:
            return await client.post("/webhooks/shoperti", content=body(order_event("e")))

    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(post(True))
    answer = asyncio.run(post(False))
    assert assert_error(answer, 503) == "internal error; nothing was stored, retry later"
    assert answer.headers["x-request-id"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_get_405_with_a_json_error(db: Any, method: str) -> None:
    with daemon(db.url, db.engine, run_worker=False) as client:
        response = client.request(method, "/webhooks/shoperti", content=body(order_event("e")))
        named = client.request(method, "/webhooks/shoperti/default")
    for answer in (response, named):
        assert assert_error(answer, 405) == "method not allowed"
        assert "POST" in answer.headers["allow"]
    assert stored(db.engine) == []


def test_stores_from_a_toml_file_each_have_their_path(db: Any, tmp_path: Path) -> None:
    config = tmp_path / "stores.toml"
    config.write_text(
        f'[[stores]]\nname = "centro"\n\n[[stores]]\nname = "norte"\nwebhook_secret = "{TOKEN}"\n',
        encoding="utf-8",
    )
    with daemon(db.url, db.engine, SYNCD_CONFIG=str(config), SYNCD_STORE="centro") as client:
        assert client.post("/webhooks/shoperti", content=body(order_event("a"))).status_code == 200
        to_norte = body(order_event("b", order_id="ord_n"))
        assert_error(client.post("/webhooks/shoperti/norte", content=to_norte), 401)
        response = client.post(
            "/webhooks/shoperti/norte", content=to_norte, params={"token": TOKEN}
        )
        assert response.status_code == 200
        assert_error(client.post("/webhooks/shoperti/default", content=to_norte), 404)
        wait_for(lambda: set(statuses(db.engine).values()) == {"applied"}, timeout=5)
    assert [(row["store"], row["id"]) for row in stored(db.engine)] == [
        ("centro", "a"),
        ("norte", "b"),
    ]
    with db.engine.connect() as conn:
        orders = conn.execute(text("SELECT store, id FROM orders ORDER BY store")).all()
    assert [tuple(row) for row in orders] == [("centro", "ord_1"), ("norte", "ord_n")]


# --- 413 ---------------------------------------------------------------------------------

LIMIT = 4096


def padded_event(size: int) -> bytes:
    """A valid event body of exactly ``size`` bytes."""
    skeleton = body(order_event("evt_big", note=""))
    padding = size - len(skeleton)
    assert padding >= 0
    return body(order_event("evt_big", note="x" * padding))


def test_a_body_over_the_limit_gets_413(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False, SYNCD_MAX_BODY_BYTES=str(LIMIT)) as client:
        too_big = padded_event(LIMIT + 1)
        assert len(too_big) == LIMIT + 1
        assert_error(client.post("/webhooks/shoperti", content=too_big), 413)
        assert stored(db.engine) == []
        just_fits = padded_event(LIMIT)
        assert client.post("/webhooks/shoperti", content=just_fits).status_code == 200
    assert statuses(db.engine) == {"evt_big": "pending"}


def test_a_chunked_body_over_the_limit_gets_413(db: Any) -> None:
    # httpx sends the whole body before it reads the answer, and uvicorn reads
    # and drops what follows a finished answer: the app's early refusal is
    # shown by the raw-socket test below; here, that 50 MB costs no time.
    def fifty_megabytes() -> Iterator[bytes]:
        yield b'{"id": "evt_huge", "type": "order.paid", "data": {"note": "'
        for _ in range(800):
            yield b" " * 65536

    with daemon(db.url, db.engine, run_worker=False, SYNCD_MAX_BODY_BYTES=str(LIMIT)) as client:
        started = time.monotonic()
        response = client.post("/webhooks/shoperti", content=fifty_megabytes())
        elapsed = time.monotonic() - started
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        assert_error(response, 413)
        # A small chunked body is fine.
        small = iter([body(order_event("evt_ok"))[:10], body(order_event("evt_ok"))[10:]])
        assert client.post("/webhooks/shoperti", content=small).status_code == 200
    assert elapsed < 10, f"refusing 50 MB took {elapsed:.1f} s"
    assert statuses(db.engine) == {"evt_ok": "pending"}


def raw_request(base: str, head: bytes, body_parts: Iterator[bytes]) -> bytes:
    """Send a request head and some body, never its end; return the answer that
    came anyway (the server must answer without the rest of the body)."""
    address = urlsplit(base)
    with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
        sock.sendall(head)
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        deadline = time.monotonic() + 5
        while b"}" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def test_the_server_answers_413_before_the_body_ends(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False, SYNCD_MAX_BODY_BYTES=str(LIMIT)) as client:
        base = str(client.base_url)
        # Chunked: twice the limit sent, the final chunk never comes.
        head = b"POST /webhooks/shoperti HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunks = (b"400\r\n" + b"x" * 1024 + b"\r\n" for _ in range(2 * LIMIT // 1024))
        chunked = raw_request(base, head, chunks)
        # Content-Length: 50 MB announced, not a byte of it sent.
        head = (
            b"POST /webhooks/shoperti HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
        )
        announced = raw_request(base, head, iter([]))
        assert client.get("/healthz").status_code == 200
    for answer in (chunked, announced):
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
        assert b'{"error":' in answer
    assert stored(db.engine) == []


# --- api verify mode: the posted body is only a hint --------------------------------------

API_KEY = "sk_test_Qm4vR8tY2w"


def fake_api(copies: dict[str, dict[str, Any]]) -> Starlette:
    """``GET /v1/events/{id}`` answering the platform's copy, or 404."""

    async def get_event(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": "bad key"}, status_code=401)
        copy = copies.get(request.path_params["event_id"])
        if copy is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"data": copy})

    return Starlette(routes=[Route("/v1/events/{event_id}", get_event)])


@contextmanager
def verifying_daemon(db: Any, copies: dict[str, dict[str, Any]]) -> Iterator[httpx.Client]:
    with (
        serving(fake_api(copies)) as api,
        daemon(
            db.url,
            db.engine,
            SYNCD_RECONCILE_INTERVAL="0",
            SYNCD_API_URL=f"{api}/v1",
            SYNCD_API_KEY=API_KEY,
            SYNCD_VERIFY="api",
        ) as client,
    ):
        yield client


def test_in_api_mode_the_apis_copy_is_applied_and_unknown_ids_rejected(db: Any) -> None:
    genuine = order_event("evt_1", total="116.00")
    forged_copy = order_event("evt_1", total="0.01", note="forged")
    invented = order_event("evt_invented", order_id="ord_x")
    with verifying_daemon(db, {"evt_1": genuine}) as client:
        for event in (forged_copy, invented):
            assert client.post("/webhooks/shoperti", content=body(event)).status_code == 200
        wait_for(lambda: "pending" not in statuses(db.engine).values(), timeout=10)
    events = {row["id"]: row for row in stored(db.engine)}
    assert (events["evt_1"]["status"], events["evt_1"]["verified"]) == ("applied", True)
    assert events["evt_1"]["payload"] == genuine
    assert events["evt_invented"]["status"] == "rejected"
    orders = metadata.tables["orders"]
    with db.engine.connect() as conn:
        applied = conn.execute(select(orders.c.id, orders.c.total, orders.c.note)).all()
    assert [tuple(row) for row in applied] == [("ord_1", Decimal("116.00"), None)]


def test_in_api_mode_a_malformed_posted_body_still_gets_the_apis_copy(db: Any) -> None:
    """The posted body is only read for its id, type and resource id; the rest
    is what the API's copy replaces, so its flaws do not matter."""
    copies = {
        f"evt_{n}": order_event(f"evt_{n}", order_id=f"ord_{n}", total=f"{n}00.00")
        for n in range(1, 6)
    }
    posted = [
        copies["evt_1"] | {"created_at": "ayer"},
        copies["evt_2"] | {"data": ["ord_2"]},  # no resource id to compare
        order_event("evt_3", order_id="ord_3", total="12,50", number="mil"),
        # These differ from the API's copy where it counts: never applied.
        order_event("evt_4", order_id="ord_other") | {"created_at": "ayer"},
        copies["evt_5"] | {"type": "order.cancelled", "data": "ord_5"},
    ]
    with verifying_daemon(db, copies) as client:
        for event in posted:
            assert client.post("/webhooks/shoperti", content=body(event)).status_code == 200
        wait_for(lambda: "pending" not in statuses(db.engine).values(), timeout=10)
    events = {row["id"]: row for row in stored(db.engine)}
    differs = "the posted event differs from the API's copy (type or resource id)"
    assert {i: (e["status"], e["last_error"]) for i, e in events.items()} == {
        "evt_1": ("applied", None),
        "evt_2": ("applied", None),
        "evt_3": ("applied", None),
        "evt_4": ("rejected", differs),
        "evt_5": ("rejected", differs),
    }
    for event_id in ("evt_1", "evt_2", "evt_3"):
        assert (events[event_id]["payload"], events[event_id]["verified"]) == (
            copies[event_id],
            True,
        )
        assert events[event_id]["resource_id"] == event_id.replace("evt", "ord")
    orders = metadata.tables["orders"]
    with db.engine.connect() as conn:
        applied = conn.execute(select(orders.c.id, orders.c.total, orders.c.number)).all()
    assert sorted(tuple(row) for row in applied) == [
        ("ord_1", Decimal("100.00"), 1001),
        ("ord_2", Decimal("200.00"), 1001),
        ("ord_3", Decimal("300.00"), 1001),
    ]


def test_in_api_mode_a_nul_in_the_apis_copy_is_replaced(db: Any) -> None:
    copy = order_event("evt_1", note="de la API\u0000")
    with verifying_daemon(db, {"evt_1": copy}) as client:
        assert (
            client.post("/webhooks/shoperti", content=body(order_event("evt_1"))).status_code == 200
        )
        wait_for(lambda: statuses(db.engine) == {"evt_1": "applied"}, timeout=10)
    [row] = stored(db.engine)
    assert (row["verified"], row["payload"]["data"]["note"]) == (True, "de la API\ufffd")
    orders = metadata.tables["orders"]
    with db.engine.connect() as conn:
        assert conn.execute(select(orders.c.note)).scalar_one() == "de la API\ufffd"


# --- 503 and health ------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unreachable_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'syncd.db'}"
    if kind == "postgresql":
        return f"postgresql://postgres@127.0.0.1:{closed_port()}/syncd"
    return f"mariadb://root@127.0.0.1:{closed_port()}/syncd"


def assert_unavailable_and_alive(client: httpx.Client) -> None:
    for event_id in ("evt_1", "evt_2"):
        response = client.post("/webhooks/shoperti", content=body(order_event(event_id)))
        assert_error(response, 503)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


@pytest.mark.parametrize("kind", KINDS)
def test_503_when_the_database_is_unreachable(kind: str, tmp_path: Path) -> None:
    url = unreachable_url(kind, tmp_path)
    engine = make_engine(url)
    try:
        with daemon(url, engine) as client:
            assert_unavailable_and_alive(client)
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_503_while_the_database_is_gone_then_back(kind: str, fresh_database: Any) -> None:
    url = fresh_database(kind)
    upgrade(url)
    engine = make_engine(url)
    admin = make_engine(
        url.rsplit("/", 1)[0] + ("/postgres" if kind == "postgresql" else "/")
    ).execution_options(isolation_level="AUTOCOMMIT")
    name = url.rsplit("/", 1)[1]
    quoted = f'"{name}"' if kind == "postgresql" else f"`{name}`"
    try:
        with daemon(url, engine) as client:
            first = client.post("/webhooks/shoperti", content=body(order_event("evt_0")))
            assert first.status_code == 200
            with admin.connect() as conn:
                force = " WITH (FORCE)" if kind == "postgresql" else ""
                conn.execute(text(f"DROP DATABASE {quoted}{force}"))
            assert_unavailable_and_alive(client)

            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {quoted}"))
            upgrade(url)
            again = client.post("/webhooks/shoperti", content=body(order_event("evt_3")))
            assert again.status_code == 200
            wait_for(lambda: statuses(engine) == {"evt_3": "applied"}, timeout=10)
            assert client.get("/readyz").status_code == 200
    finally:
        engine.dispose()
        admin.dispose()


def test_503_when_the_sqlite_directory_is_removed_after_start(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    url = f"sqlite:///{folder / 'syncd.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with daemon(url, engine, run_worker=False) as client:
            engine.dispose()  # no open connection keeps the removed file alive
            shutil.rmtree(folder)
            assert_unavailable_and_alive(client)
    finally:
        engine.dispose()


def test_readyz_is_200_on_a_migrated_database(db: Any) -> None:
    with daemon(db.url, db.engine) as client:
        ready = client.get("/readyz")
        health = client.get("/healthz")
    assert (ready.status_code, ready.json()["status"]) == (200, "ready")
    assert health.status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_readyz_is_503_on_an_unmigrated_database(kind: str, fresh_database: Any) -> None:
    url = fresh_database(kind)
    engine = make_engine(url)
    try:
        with daemon(url, engine, run_worker=False) as client:
            ready = client.get("/readyz")
            health = client.get("/healthz")
    finally:
        engine.dispose()
    assert ready.status_code == 503
    assert "syncd db upgrade" in ready.json()["reason"]
    assert health.status_code == 200


def test_metrics_count_answers_by_code(db: Any) -> None:
    with daemon(db.url, db.engine, run_worker=False) as client:
        client.post("/webhooks/shoperti", content=body(order_event("evt_1")))
        client.post("/webhooks/shoperti", content=b"[]")
        client.post("/webhooks/shoperti", content=b"[]")
        metrics = client.get("/metrics").text
    assert 'syncd_webhooks_total{code="200",store="default"} 1.0' in metrics
    assert 'syncd_webhooks_total{code="400",store="default"} 2.0' in metrics
