"""The simulated Shoperti store, over real HTTP: API, payloads, webhooks, CLI."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.simulator import DeliveryStats, Faults, Quirks, SimulatedStore
from syncd.simulator.cli import main as cli_main

T = TypeVar("T")
KEY = "sk_test_simulator"
FIXED = 1_800_000_000  # 2027-01-15T02:00:00Z
DAY = 86400
MEXICO_CITY = timezone(timedelta(hours=-6))
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(-06:00)?$")
MONEY_FIELDS = ("subtotal", "total_discounts", "total_tax", "total_shipping", "total")


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coroutine

    return asyncio.run(bounded())


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = FIXED) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def client(store: SimulatedStore, key: str = KEY, timeout: float = 10) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=store.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


def instant(text: str) -> float:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive means UTC
    return moment.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, MEXICO_CITY).isoformat()


def money(value: object) -> Decimal:
    assert isinstance(value, str | int | float) and not isinstance(value, bool), value
    if isinstance(value, str):
        assert re.fullmatch(r"\d+\.\d\d", value), value
    return Decimal(str(value))


class Receiver:
    """A webhook endpoint on loopback that records every delivery attempt.

    ``answer(event_id, attempt)`` picks the status; a 3xx redirects to ``/elsewhere``.
    """

    def __init__(self, answer: Callable[[str, int], int] | None = None) -> None:
        self.answer = answer or (lambda event_id, attempt: 200)
        self.attempts: Counter[str] = Counter()
        self.hits: list[tuple[str, int, float]] = []  # event id, status, monotonic time
        self.accepted: list[str] = []
        self.bodies: dict[str, dict[str, Any]] = {}
        self.elsewhere = 0
        self.base = self.url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def hook(self, request: Request) -> Response:
        event = orjson.loads(await request.body())
        event_id = event["id"]
        self.attempts[event_id] += 1
        status = self.answer(event_id, self.attempts[event_id])
        self.hits.append((event_id, status, time.monotonic()))
        if 300 <= status < 400:
            return Response(status_code=status, headers={"Location": self.base + "/elsewhere"})
        if 200 <= status < 300:
            self.accepted.append(event_id)
            self.bodies[event_id] = event
        return Response(status_code=status)

    async def other(self, request: Request) -> Response:
        self.elsewhere += 1
        return Response("ok")

    async def __aenter__(self) -> Receiver:
        app = Starlette(
            routes=[
                Route("/hook", self.hook, methods=["POST"]),
                Route("/elsewhere", self.other, methods=["GET", "POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(10):
            while not self._server.started:  # noqa: ASYNC110 (uvicorn offers no event)
                await asyncio.sleep(0.005)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.url = self.base + "/hook?token=x"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        await self._task


async def sell_and_deliver(
    receiver: Receiver, orders: int, faults: Faults | None = None, **options: Any
) -> tuple[SimulatedStore, DeliveryStats]:
    store = SimulatedStore(seed=11, api_key=KEY, webhook_url=receiver.url, faults=faults, **options)
    async with store:
        await store.sell(orders=orders)
        await store.wait_deliveries(timeout=30)
        return store, store.delivery_stats


def sold_offline(orders: int, seed: int = 7, clock: Callable[[], float] | None = None,
                 **options: Any) -> SimulatedStore:  # fmt: skip
    """A store that sold without serving (no webhook URL, no server needed)."""
    store = SimulatedStore(seed=seed, api_key=KEY, clock=clock, **options)
    run(store.sell(orders=orders))
    return store


# --- serving ------------------------------------------------------------------------


def test_starts_on_free_ports_and_stops_cleanly() -> None:
    async def scenario() -> None:
        async with (
            SimulatedStore(seed=1, api_key=KEY) as first,
            SimulatedStore(seed=2, api_key=KEY) as second,
        ):
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", first.api_url)
            assert first.api_url != second.api_url
            async with client(first) as api:
                assert (await api.get("/orders")).json()["data"] == []
            url = first.api_url
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as plain:
                await plain.get(url + "/orders")

    run(scenario())


def test_auth_and_unknown_ids() -> None:
    async def scenario() -> None:
        async with SimulatedStore(seed=1, api_key=KEY, quirks=Quirks(single_objects="bare")) as s:
            await s.sell(orders=3)
            order_id = next(iter(s.truth().orders))
            async with httpx.AsyncClient(base_url=s.api_url) as anonymous:
                missing = await anonymous.get("/orders")
                assert missing.status_code == 401
                assert missing.json()["error"] == "unauthorized"
            async with client(s, key="sk_wrong") as wrong:
                assert (await wrong.get(f"/orders/{order_id}")).status_code == 401
            async with client(s) as api:
                assert (await api.get(f"/orders/{order_id}")).json()["id"] == order_id
                for path in ("/orders/nope", "/customers/nope", "/events/nope", "/products"):
                    answer = await api.get(path)
                    assert answer.status_code == 404, path
                    assert "error" in answer.json()
            assert s.api_answers[401] == 2

    run(scenario())


def test_pagination_envelope_links_and_bounds() -> None:
    async def scenario() -> None:
        async with SimulatedStore(seed=3, api_key=KEY, per_page_max=50) as store:
            await store.sell(orders=25)
            async with client(store) as api:
                first = (await api.get("/orders", params={"per_page": 7})).json()
                pagination = first["meta"]["pagination"]
                assert pagination["total"] == 25
                assert (pagination["count"], pagination["per_page"]) == (7, 7)
                assert (pagination["current_page"], pagination["total_pages"]) == (1, 4)

                by_links, page = [], first
                while True:
                    by_links += [order["id"] for order in page["data"]]
                    links = page["meta"]["pagination"]["links"]
                    if "next" not in links:
                        break
                    assert links["next"].startswith(store.api_url + "/orders?")
                    page = (await api.get(links["next"])).json()
                last = page["meta"]["pagination"]
                assert (last["current_page"], last["count"], last["links"]) == (4, 4, {})

                by_number = []
                for number in range(1, 5):
                    params = {"per_page": 7, "page": number}
                    body = (await api.get("/orders", params=params)).json()
                    by_number += [order["id"] for order in body["data"]]
                assert by_links == by_number
                assert sorted(by_links) == sorted(store.truth().orders)

                default = (await api.get("/events")).json()["meta"]["pagination"]
                assert default["per_page"] == 50
                beyond = (await api.get("/orders", params={"page": 99})).json()
                assert beyond["data"] == [] and beyond["meta"]["pagination"]["count"] == 0
                for bad in ({"per_page": 0}, {"per_page": 51}, {"per_page": "x"}, {"page": 0}):
                    answer = await api.get("/orders", params=bad)
                    assert answer.status_code == 400, bad
                    assert "per_page" in answer.text or "page" in answer.text

    run(scenario())


def test_lists_are_oldest_first_by_updated_at_then_id() -> None:
    store = SimulatedStore(seed=4, api_key=KEY)

    async def scenario() -> list[dict[str, Any]]:
        async with store:
            await store.sell(orders=40)
            async with client(store) as api:
                return list((await api.get("/customers")).json()["data"])

    customers = run(scenario())
    keys = [(instant(c["updated_at"]), c["id"]) for c in customers]
    assert keys == sorted(keys)
    assert len(customers) == len(store.truth().customers)


def test_omit_links_and_object_wrapping_quirks() -> None:
    async def fetch(quirks: Quirks, tries: int = 1) -> tuple[dict[str, Any], list[bool]]:
        async with SimulatedStore(seed=5, api_key=KEY, quirks=quirks) as store:
            await store.sell(orders=2)
            event_id = store.events[0]["id"]
            async with client(store) as api:
                page = (await api.get("/events", params={"per_page": 1})).json()
                wrapped = []
                for _ in range(tries):
                    body = (await api.get(f"/events/{event_id}")).json()
                    is_wrapped = list(body) == ["data"]  # a bare event has "object": "event"
                    assert (body["data"] if is_wrapped else body)["id"] == event_id
                    wrapped.append(is_wrapped)
                return page["meta"]["pagination"], wrapped

    pagination, wrapped = run(fetch(Quirks(omit_links=True, single_objects="wrapped")))
    assert "links" not in pagination and pagination["total_pages"] > 1
    assert wrapped == [True]
    pagination, wrapped = run(fetch(Quirks(single_objects="bare")))
    assert "next" in pagination["links"]
    assert wrapped == [False]
    _, wrapped = run(fetch(Quirks(), tries=30))
    assert set(wrapped) == {True, False}


def test_created_at_min_and_updated_at_min_are_inclusive_and_read_naive_as_utc() -> None:
    clock = Clock()
    store = SimulatedStore(seed=6, api_key=KEY, clock=clock)

    async def scenario() -> None:
        async with store:
            await store.sell(orders=5)
            early = len(store.events)
            clock.now = FIXED + 100
            await store.sell(orders=5)
            late_events = len(store.events) - early
            async with client(store) as api:

                async def total(path: str, name: str, when: str) -> int:
                    answer = await api.get(path, params={name: when})
                    assert answer.status_code == 200, answer.text
                    return int(answer.json()["meta"]["pagination"]["total"])

                boundary = FIXED + 100
                spellings = [
                    datetime.fromtimestamp(boundary, UTC).isoformat(),  # +00:00
                    datetime.fromtimestamp(boundary, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    datetime.fromtimestamp(boundary, UTC).replace(tzinfo=None).isoformat(),
                    datetime.fromtimestamp(boundary, MEXICO_CITY).isoformat(),
                ]
                for spelling in spellings:
                    assert await total("/events", "created_at_min", spelling) == late_events
                    assert await total("/orders", "updated_at_min", spelling) == 5
                assert await total("/events", "created_at_min", iso(boundary - 1)) == late_events
                assert await total("/events", "created_at_min", iso(boundary + 1)) == 0
                assert await total("/events", "created_at_min", iso(FIXED)) == len(store.events)
                customers = store.truth().customers.values()
                changed = [c for c in customers if instant(c["updated_at"]) >= boundary]
                assert await total("/customers", "updated_at_min", iso(boundary)) == len(changed)
                bad = await api.get("/events", params={"created_at_min": "yesterday"})
                assert bad.status_code == 400

    run(scenario())


def test_events_older_than_retention_are_neither_listed_nor_fetchable() -> None:
    clock = Clock()
    store = SimulatedStore(seed=8, api_key=KEY, clock=clock, retention_seconds=30 * DAY)
    emitted = store.generate_history(orders=400, days=90)
    events = store.events
    assert len(events) == emitted > 0
    assert min(instant(e["created_at"]) for e in events) >= FIXED - 30 * DAY
    truth = store.truth()
    assert len(truth.orders) == 400
    assert min(instant(o["created_at"]) for o in truth.orders.values()) < FIXED - 60 * DAY

    async def scenario() -> None:
        async with store, client(store) as api:
            listed = (await api.get("/events", params={"per_page": 1})).json()
            assert listed["meta"]["pagination"]["total"] == emitted
            assert (await api.get("/orders")).json()["meta"]["pagination"]["total"] == 400
            clock.now = FIXED + 10 * DAY
            floor = clock.now - 30 * DAY
            expired = [e for e in events if instant(e["created_at"]) < floor]
            kept = [e for e in events if instant(e["created_at"]) >= floor]
            assert expired and kept
            listed = (await api.get("/events", params={"per_page": 1})).json()
            assert listed["meta"]["pagination"]["total"] == len(kept)
            assert listed["data"][0]["id"] == kept[0]["id"]
            assert (await api.get(f"/events/{expired[-1]['id']}")).status_code == 404
            assert (await api.get(f"/events/{kept[0]['id']}")).status_code == 200

    run(scenario())


def test_deleted_resources_are_tombstones_in_lists_and_404_by_id_unless_asked() -> None:
    async def scenario(quirks: Quirks) -> tuple[set[str], list[int]]:
        async with SimulatedStore(seed=9, api_key=KEY, quirks=quirks) as store:
            await store.sell(orders=300)
            truth = store.truth()
            assert truth.deleted_orders and truth.deleted_customers
            for order_id in truth.deleted_orders:
                assert truth.orders[order_id]["deleted"] is True
            async with client(store) as api:
                listed: set[str] = set()
                page = 1
                while True:
                    body = (await api.get("/orders", params={"page": page})).json()
                    listed |= {o["id"] for o in body["data"] if o.get("deleted")}
                    if page >= body["meta"]["pagination"]["total_pages"]:
                        break
                    page += 1
                statuses = [
                    (await api.get(f"/orders/{order_id}")).status_code
                    for order_id in sorted(truth.deleted_orders)
                ]
            assert listed == set(truth.deleted_orders)
            return listed, statuses

    _, statuses = run(scenario(Quirks()))
    assert set(statuses) == {404}
    _, statuses = run(scenario(Quirks(deleted_by_id="tombstone")))
    assert set(statuses) == {200}


def test_api_faults_429_5xx_and_slow_answers() -> None:
    async def status_of(faults: Faults, read_timeout: float = 10) -> httpx.Response:
        store = SimulatedStore(seed=1, api_key=KEY, faults=faults)
        async with store, client(store, timeout=read_timeout) as api:
            return await api.get("/orders")

    limited = run(status_of(Faults(api_429_rate=1.0, api_retry_after=7)))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    assert run(status_of(Faults(api_5xx_rate=1.0))).status_code in (500, 502, 503)
    with pytest.raises(httpx.ReadTimeout):
        run(status_of(Faults(api_slow_rate=1.0, api_slow_seconds=0.6), read_timeout=0.1))

    async def mixed() -> Counter[int]:
        store = SimulatedStore(
            seed=1, api_key=KEY, faults=Faults(api_429_rate=0.3, api_5xx_rate=0.3)
        )
        async with store, client(store) as api:
            return Counter([(await api.get("/orders")).status_code for _ in range(60)])

    answers = run(mixed())
    assert answers[200] and answers[429] and sum(answers[s] for s in (500, 502, 503))


# --- payloads -----------------------------------------------------------------------


def test_payloads_look_like_a_mexican_store_and_add_up_exactly() -> None:
    store = sold_offline(400, clock=Clock())
    events = store.events
    orders = [e["data"] for e in events if e["type"].startswith("order.")]
    customers = [e["data"] for e in events if e["type"].startswith("customer.")]
    customers += [o["customer"] for o in orders if o["customer"] is not None]
    assert orders and customers

    money_kinds = set()
    for order in orders:
        assert order["currency"] == "MXN"
        assert 1 <= len(order["line_items"]) <= 5
        lines = Decimal(0)
        for item in order["line_items"]:
            line = money(item["price"]) * item["quantity"] - money(item["total_discount"])
            assert money(item["total"]) == line
            lines += line
        subtotal, discounts, tax, shipping, total = (money(order[f]) for f in MONEY_FIELDS)
        assert subtotal == lines
        assert total == subtotal - discounts + tax + shipping
        assert tax == ((subtotal - discounts) * Decimal("0.16")).quantize(Decimal("0.01"))
        money_kinds |= {type(order[f]) for f in MONEY_FIELDS}
        assert isinstance(order["email"], str) and "@" in order["email"]
        assert isinstance(order["tags"], list)
    assert money_kinds == {str, float, int}

    # Every timestamp is -06:00 or naive (UTC), and all denote the fixed clock's instant.
    stamps = [e["created_at"] for e in events]
    for resource in (*orders, *customers):
        stamps += [resource[f] for f in ("created_at", "updated_at")]
        stamps += [resource[f] for f in ("cancelled_at", "closed_at") if resource.get(f)]
    assert all(TIMESTAMP.match(s) for s in stamps)
    assert {instant(s) for s in stamps} == {FIXED}
    assert any(s.endswith("-06:00") for s in stamps) and any(len(s) == 19 for s in stamps)

    names = {c["first_name"] + " " + c["last_name"] for c in customers}
    assert any(ch in name for name in names for ch in "ñÑáéíóú")
    guests = [o for o in orders if o["customer"] is None]
    assert guests and all(o["email"] for o in guests)
    assert any(o["shipping_address"] is None for o in orders)
    assert any(o["billing_address"] is None for o in orders)
    assert any(o["note"] and not o["note"].isascii() for o in orders)
    cities = {o["shipping_address"]["city"] for o in orders if o["shipping_address"]}
    assert {"Ciudad de México", "Guadalajara", "Monterrey"} <= cities
    for customer in customers:
        money(customer["total_spent"])
        assert sum(a["default"] for a in customer["addresses"]) <= 1
        assert all(a["id"] for a in customer["addresses"])

    created = [e["data"]["number"] for e in events if e["type"] == "order.created"]
    assert created == list(range(1001, 1001 + 400))
    assert {o["number"] for o in orders} == set(created)

    types = Counter(e["type"] for e in events)
    expected = {
        "order.created", "order.updated", "order.paid", "order.fulfilled", "order.cancelled",
        "order.refunded", "order.deleted", "customer.created", "customer.updated",
        "customer.deleted", "product.updated",
    }  # fmt: skip
    assert set(types) == expected
    ids = [e["id"] for e in events] + [o["id"] for o in orders] + [c["id"] for c in customers]
    assert all(re.fullmatch(r"c[0-9a-z]{24}", i) for i in ids)
    assert len({e["id"] for e in events}) == len(events)


def test_truth_is_the_last_event_of_each_resource_and_what_the_api_serves() -> None:
    store = SimulatedStore(seed=12, api_key=KEY, quirks=Quirks(single_objects="bare"))

    async def scenario() -> None:
        async with store:
            await store.sell(orders=60)
            truth = store.truth()
            last: dict[str, dict[str, Any]] = {}
            previous: dict[str, float] = {}
            for event in store.events:
                kind = event["type"].split(".")[0]
                if kind in ("order", "customer"):
                    data = event["data"]
                    updated = instant(data["updated_at"])
                    assert updated >= previous.get(data["id"], 0)
                    assert updated == instant(event["created_at"])
                    previous[data["id"]] = updated
                    last[data["id"]] = data
            assert {**truth.orders, **truth.customers} == last
            async with client(store) as api:
                for order_id in list(truth.orders)[:10]:
                    if order_id not in truth.deleted_orders:
                        body = (await api.get(f"/orders/{order_id}")).json()
                        assert body == truth.orders[order_id]
                event = store.events[-1]
                assert (await api.get(f"/events/{event['id']}")).json() == event

    run(scenario())


def test_same_seed_same_run_and_another_seed_another() -> None:
    def signature(store: SimulatedStore) -> tuple[Any, ...]:
        truth = store.truth()
        return store.events, truth.orders, truth.customers

    first = signature(sold_offline(80, seed=21, clock=Clock()))
    assert first == signature(sold_offline(80, seed=21, clock=Clock()))
    assert first != signature(sold_offline(80, seed=22, clock=Clock()))

    def shape(store: SimulatedStore) -> list[tuple[str, str, str]]:
        return [(e["id"], e["type"], e["data"]["id"]) for e in store.events]

    # With the wall clock, everything but timestamps repeats too.
    assert shape(sold_offline(30, seed=23)) == shape(sold_offline(30, seed=23))

    history = SimulatedStore(seed=24, clock=Clock()), SimulatedStore(seed=24, clock=Clock())
    for store in history:
        store.generate_history(orders=300, days=60)
    assert signature(history[0]) == signature(history[1])


def test_history_is_fast_spread_over_the_days_and_then_selling_continues() -> None:
    store = SimulatedStore(seed=25, api_key=KEY, retention_seconds=30 * DAY)
    begun = time.perf_counter()
    store.generate_history(orders=5000, days=365)
    assert time.perf_counter() - begun < 10  # ~1 s here; 50k orders take a few seconds
    truth = store.truth()
    assert len(truth.orders) == 5000
    now = time.time()
    created = sorted(instant(o["created_at"]) for o in truth.orders.values())
    assert now - 366 * DAY <= created[0] < now - 300 * DAY and created[-1] <= now + 1
    history_events = store.events
    times = [instant(e["created_at"]) for e in history_events]
    assert times == sorted(times) and times[0] >= now - 30 * DAY - 5
    run(store.sell(orders=10))
    numbers = [o["number"] for o in store.truth().orders.values()]
    assert sorted(numbers) == list(range(1001, 1001 + 5010))
    assert store.events[: len(history_events)] == history_events


# --- webhooks -----------------------------------------------------------------------


def test_without_faults_every_event_arrives_once_as_emitted() -> None:
    async def scenario() -> None:
        async with Receiver() as receiver:
            store, stats = await sell_and_deliver(receiver, orders=30)
            events = store.events
            assert Counter(receiver.attempts.values()) == {1: len(events)}
            assert receiver.bodies == {e["id"]: e for e in events}
            assert store.delivered_event_ids == store.sold_event_ids == [e["id"] for e in events]
            assert store.lost_event_ids == []
            assert stats.answers == {200: len(events)} and stats.retried == 0
            assert stats.scheduled == stats.attempted == stats.delivered_events == len(events)

    run(scenario())


def test_dropped_events_are_exactly_the_lost_ones() -> None:
    async def scenario() -> None:
        async with Receiver() as receiver:
            store, stats = await sell_and_deliver(receiver, 40, Faults(drop_rate=0.3))
            assert stats.dropped_for_good
            assert set(receiver.accepted) == set(store.delivered_event_ids)
            assert store.lost_event_ids == stats.dropped_for_good
            assert not set(receiver.attempts) & set(stats.dropped_for_good)
            assert len(store.lost_event_ids) + len(store.delivered_event_ids) == len(store.events)

    run(scenario())


def test_duplicates_arrive_more_than_once() -> None:
    async def scenario() -> None:
        async with Receiver() as receiver:
            store, stats = await sell_and_deliver(
                receiver, 30, Faults(duplicate_rate=0.5), time_scale=0.1 / 3600
            )
            repeated = {event_id for event_id, n in receiver.attempts.items() if n > 1}
            assert repeated == set(stats.duplicated_event_ids) != set()
            assert sum(receiver.attempts.values()) == len(store.events) + stats.duplicated
            assert store.lost_event_ids == []

    run(scenario())


def test_failing_receiver_is_retried_every_platform_hour_until_it_answers() -> None:
    interval = 0.05

    async def scenario() -> None:
        async with Receiver(lambda event_id, attempt: 500 if attempt <= 2 else 200) as receiver:
            store, stats = await sell_and_deliver(
                receiver, 15, time_scale=interval / 3600, delivery_concurrency=32
            )
            n = len(store.events)
            assert stats.answers == {500: 2 * n, 200: n} and stats.retried == 2 * n
            assert store.lost_event_ids == [] and stats.gave_up == []
            for event_id in store.sold_event_ids:
                moments = [at for hit, _, at in receiver.hits if hit == event_id]
                assert len(moments) == 3
                assert all(b - a >= interval * 0.9 for a, b in itertools.pairwise(moments))

    run(scenario())


def test_redirects_are_failures_and_given_up_after_48_retries() -> None:
    async def scenario() -> None:
        async with Receiver(lambda event_id, attempt: 302) as receiver:
            store, stats = await sell_and_deliver(
                receiver, 1, time_scale=0.002 / 3600, delivery_concurrency=32
            )
            events = store.sold_event_ids
            assert events and receiver.elsewhere == 0
            assert set(receiver.attempts.values()) == {49}
            assert sorted(stats.gave_up) == sorted(events) == sorted(store.lost_event_ids)
            assert stats.answers == {302: 49 * len(events)} and stats.retried == 48 * len(events)
            assert store.delivered_event_ids == []

    run(scenario())


def test_unreachable_receiver_counts_transport_errors() -> None:
    async def scenario() -> None:
        async with Receiver() as receiver:
            url = receiver.url
        store = SimulatedStore(seed=1, webhook_url=url, time_scale=0.002 / 3600, max_retries=3)
        async with store:
            await store.sell(orders=1)
            await store.wait_deliveries(timeout=10)
            stats = store.delivery_stats
        assert stats.transport_errors == stats.attempted == 4 * len(store.sold_event_ids)
        assert stats.gave_up == store.lost_event_ids == store.sold_event_ids

    run(scenario())


def test_reorder_window_shuffles_and_delay_still_delivers_everything() -> None:
    async def arrival(faults: Faults) -> tuple[list[str], list[str]]:
        async with Receiver() as receiver:
            store, _ = await sell_and_deliver(receiver, 20, faults, delivery_concurrency=1)
            return receiver.accepted, store.sold_event_ids

    arrived, emitted = run(arrival(Faults()))
    assert arrived == emitted
    arrived, emitted = run(arrival(Faults(reorder_window=10)))
    assert arrived != emitted and sorted(arrived) == sorted(emitted)
    arrived, emitted = run(arrival(Faults(delay_max=0.05)))
    assert sorted(arrived) == sorted(emitted)


def test_wait_deliveries_times_out_while_retries_are_pending() -> None:
    async def scenario() -> None:
        async with (
            Receiver(lambda event_id, attempt: 503) as receiver,
            SimulatedStore(seed=1, webhook_url=receiver.url, time_scale=1.0) as store,
        ):
            await store.sell(orders=1)
            with pytest.raises(TimeoutError):
                await store.wait_deliveries(timeout=0.3)
            assert store.delivery_stats.in_flight == len(store.sold_event_ids)

    run(scenario())


# --- from synchronous code and from the command line -------------------------------


def test_runs_in_a_background_thread_for_synchronous_callers() -> None:
    store = SimulatedStore(seed=13, api_key=KEY)
    url = store.start_in_thread()
    try:
        begun = time.monotonic()
        emitted = store.run(store.sell(orders=5, rate=100))
        assert time.monotonic() - begun >= (emitted - 1) / 100 > 0  # the rate paces selling
        answer = httpx.get(url + "/orders", headers={"Authorization": f"Bearer {KEY}"})
        assert answer.json()["meta"]["pagination"]["total"] == 5 == len(store.truth().orders)
        assert len(store.events) == len(store.sold_event_ids)
    finally:
        store.stop_thread()


def read_line(stream: Any, deadline: float) -> str:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.1)
        if ready:
            return str(stream.readline())
    raise TimeoutError("no line from the simulator")


def test_cli_serves_until_sigterm_and_writes_the_truth(tmp_path: Path) -> None:
    truth_file = tmp_path / "truth.json"
    command = [sys.executable, "-m", "syncd.simulator", "--orders", "20", "--seed", "3",
               "--api-key", KEY, "--truth-file", str(truth_file)]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        deadline = time.monotonic() + 20
        first = read_line(process.stdout, deadline)
        assert first.startswith("api_url=http://127.0.0.1:")
        api_url = first.strip().removeprefix("api_url=")
        headers = {"Authorization": f"Bearer {KEY}"}
        total = 0
        while total < 20 and time.monotonic() < deadline:
            body = httpx.get(api_url + "/orders", headers=headers).json()
            total = body["meta"]["pagination"]["total"]
            time.sleep(0.02)  # polling a subprocess: nothing to wait on but time
        assert total == 20
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stdout is not None
        assert "sold: 20 orders" in process.stdout.read()
    truth = orjson.loads(truth_file.read_bytes())
    assert len(truth["orders"]) == 20 and truth["customers"]
    assert truth["delivered_event_ids"] == [] and truth["lost_event_ids"]


def test_cli_main_sells_delivers_and_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    received: list[str] = []

    async def scenario() -> int:
        async with Receiver() as receiver:
            argv = ["--orders", "10", "--seed", "4", "--webhook-url", receiver.url,
                    "--drop-rate", "0.2", "--exit-after-selling",
                    "--truth-file", str(tmp_path / "truth.json")]  # fmt: skip
            code = await asyncio.to_thread(cli_main, argv)
            received.extend(receiver.accepted)
            return code

    assert run(scenario()) == 0
    out = capsys.readouterr().out
    assert out.startswith("api_url=http://127.0.0.1:") and "webhooks:" in out
    truth = orjson.loads((tmp_path / "truth.json").read_bytes())
    assert len(truth["orders"]) == 10
    assert sorted(truth["delivered_event_ids"]) == sorted(received) and truth["lost_event_ids"]


def test_cli_rejects_bad_values_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--drop-rate", "1.5"]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


# --- payments, refunds, fulfillments, discount codes ------------------------------------


def test_payments_refunds_shipments_and_codes_add_up() -> None:
    orders = list(sold_offline(1500, seed=5).truth().orders.values())
    shapes: Counter[str] = Counter()
    for order in orders:
        total = money(order["total"])
        codes = order["discount_codes"]
        assert sum((money(c["amount"]) for c in codes), Decimal(0)) == money(
            order["total_discounts"]
        )
        shapes.update(f"code:{c['type']}" for c in codes)

        sales = [t for t in order["transactions"] if t["kind"] == "sale"]
        paid = sum((money(t["amount"]) for t in sales if t["status"] == "success"), Decimal(0))
        assert paid in (Decimal(0), total), order["id"]
        assert paid == total or order["financial_status"] in ("pending", "voided")
        for t in order["transactions"]:
            assert t["currency"] == "MXN" and money(t["amount"]) > 0
            assert (t["processed_at"] is None) == (t["status"] in ("pending", "expired"))
            shapes[f"{t['payment_method']}:{t['kind']}:{t['status']}"] += 1
            if t["status"] == "failure":
                assert t["error_code"] and t["authorization"] is None
        if any(t["status"] == "expired" for t in sales):
            assert order["status"] == "cancelled" and paid == 0

        refunds = order["refunds"]
        refunded = sum((money(r["amount"]) for r in refunds), Decimal(0))
        assert refunded <= paid, order["id"]
        refund_txns = [t for t in order["transactions"] if t["kind"] == "refund"]
        assert sorted(money(t["amount"]) for t in refund_txns) == sorted(
            money(r["amount"]) for r in refunds
        )
        if order["financial_status"] == "refunded" and paid:
            assert refunded == paid
            shapes["refund:full"] += 1
        if order["financial_status"] == "partially_refunded":
            assert 0 < refunded < paid
            shapes["refund:partial"] += 1
        quantities = {item["id"]: item["quantity"] for item in order["line_items"]}
        for line_id in quantities:
            back = sum(
                line["quantity"]
                for r in refunds
                for line in r["line_items"]
                if line["line_item_id"] == line_id
            )
            shipped = sum(
                line["quantity"]
                for f in order["fulfillments"]
                for line in f["line_items"]
                if line["line_item_id"] == line_id
            )
            assert back <= quantities[line_id]
            if order["fulfillment_status"] == "fulfilled":
                assert shipped == quantities[line_id], order["id"]
        shapes[f"shipments:{len(order['fulfillments'])}"] += 1
        for f in order["fulfillments"]:
            if order["shipping_address"] is not None:
                assert f["tracking_number"] and f["tracking_url"].endswith(f["tracking_number"])
    for shape in (
        "code:percentage",
        "code:fixed_amount",
        "card:sale:failure",
        "card:sale:success",
        "oxxo:sale:pending",
        "oxxo:sale:success",
        "oxxo:sale:expired",
        "spei:sale:success",
        "paypal:sale:success",
        "card:refund:success",
        "refund:full",
        "refund:partial",
        "shipments:1",
        "shipments:2",
    ):
        assert shapes[shape] > 0, shape
