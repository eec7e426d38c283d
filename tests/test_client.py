"""Edge cases of the Shoperti API client, against ``httpx.MockTransport``.

The simulator covers the happy path over real HTTP; here we script the awkward
answers (429, 5xx, timeouts, malformed pages, hostile links) one by one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import string
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiRateLimited,
    ApiUnavailable,
    ConfigError,
    SyncdError,
    WireError,
)
from syncd.shoperti.client import Page, PageCursor, ShopertiClient, format_since

API = "https://shop.example/v1"
KEY = "sk_live_Zq8rT2mVx0pL4nB7"
T = TypeVar("T")

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class Harness:
    """A client over a scripted MockTransport that records requests and sleeps."""

    def __init__(
        self, *answers: Answer, key: str = KEY, api_url: str = API, **client_kwargs: Any
    ) -> None:
        self.answers = list(answers)
        self.key = key
        self.api_url = api_url
        self.requests: list[httpx.Request] = []
        self.delays: list[float] = []
        self.outcomes: list[tuple[str, int | str]] = []
        self.client_kwargs = client_kwargs

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected extra request: {request.url}")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)

    def client(self) -> ShopertiClient:
        kwargs: dict[str, Any] = {
            "transport": httpx.MockTransport(self.handler),
            "sleep": self.sleep,
            "on_response": lambda endpoint, outcome: self.outcomes.append((endpoint, outcome)),
            **self.client_kwargs,
        }
        return ShopertiClient(self.api_url, self.key, **kwargs)

    def run(self, call: Callable[[ShopertiClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with self.client() as client:
                return await call(client)

        return asyncio.run(main())

    def all_pages(self, resource: str = "events", **kwargs: Any) -> list[Page]:
        kwargs.setdefault("since", None)

        async def collect(client: ShopertiClient) -> list[Page]:
            return [page async for page in client.pages(resource, **kwargs)]  # type: ignore[arg-type]

        return self.run(collect)


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def status(code: int, **headers: str) -> httpx.Response:
    return httpx.Response(code, json={"error": "x"}, headers=headers)


def listing(
    items: list[dict[str, Any]],
    *,
    current: int | None = None,
    total_pages: int | None = None,
    next_url: str | None = None,
    total: int | None = None,
) -> httpx.Response:
    pagination: dict[str, Any] = {"count": len(items), "per_page": 100}
    if current is not None:
        pagination["current_page"] = current
    if total_pages is not None:
        pagination["total_pages"] = total_pages
    if total is not None:
        pagination["total"] = total
    if next_url is not None:
        pagination["links"] = {"next": next_url}
    return ok({"data": items, "meta": {"pagination": pagination}})


def ids(pages: list[Page]) -> list[str]:
    return [item["id"] for page in pages for item in page.items]


# -- requests: auth, URLs, timeouts ----------------------------------------------------


def test_sends_bearer_key_to_the_object_url() -> None:
    h = Harness(ok({"id": "evt_1"}))
    h.run(lambda c: c.get_event("evt_1"))
    (request,) = h.requests
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "application/json"
    assert str(request.url) == f"{API}/events/evt_1"
    assert KEY not in str(request.url)


def test_configures_connect_and_read_timeouts() -> None:
    h = Harness(ok({"id": "o1"}), timeout=7.0, connect_timeout=2.0)
    h.run(lambda c: c.get_order("o1"))
    timeouts = h.requests[0].extensions["timeout"]
    assert timeouts["connect"] == 2.0
    assert timeouts["read"] == 7.0


def test_trailing_slash_in_api_url_and_escaped_ids() -> None:
    h = Harness(ok({"id": "a/b?c"}), api_url=API + "/")
    h.run(lambda c: c.get_customer("a/b?c"))
    assert h.requests[0].url.raw_path == b"/v1/customers/a%2Fb%3Fc"


def test_numeric_ids_are_sent_as_text() -> None:
    h = Harness(ok({"id": 42}))
    h.run(lambda c: c.get_order(42))
    assert h.requests[0].url.path == "/v1/orders/42"


@pytest.mark.parametrize("bad_id", ["", ".", ".."])
def test_ids_that_are_path_segments_are_not_requested(bad_id: str) -> None:
    h = Harness()
    with pytest.raises(ApiNotFound):
        h.run(lambda c: c.get_event(bad_id))
    assert h.requests == []


# -- single objects ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"id": "o1", "total": "10.00"}, {"id": "o1", "total": "10.00"}),
        ({"data": {"id": "o1", "total": "10.00"}}, {"id": "o1", "total": "10.00"}),
        # An event is bare and has a `data` object of its own: not a wrapper.
        (
            {"id": "evt_1", "type": "order.paid", "data": {"id": "o1"}},
            {"id": "evt_1", "type": "order.paid", "data": {"id": "o1"}},
        ),
        (
            {"data": {"id": "evt_1", "data": {"id": "o1"}}},
            {"id": "evt_1", "data": {"id": "o1"}},
        ),
    ],
    ids=["bare", "wrapped", "bare-event-with-data", "wrapped-event"],
)
def test_single_objects_bare_or_wrapped(body: dict[str, Any], expected: dict[str, Any]) -> None:
    h = Harness(ok(body))
    assert h.run(lambda c: c.get_event("evt_1")) == expected


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html><body>Maintenance</body></html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, content=b""),
    ],
    ids=["html", "list", "empty"],
)
def test_malformed_single_object_is_a_wire_error(response: httpx.Response) -> None:
    h = Harness(response)
    with pytest.raises(WireError):
        h.run(lambda c: c.get_order("o1"))
    assert len(h.requests) == 1  # a wrong shape is not transient: no retry


# -- status codes --------------------------------------------------------------------


def test_401_is_an_auth_error_without_retry() -> None:
    h = Harness(status(401), store="mx")
    with pytest.raises(ApiAuthError) as caught:
        h.run(lambda c: c.get_event("evt_1"))
    assert len(h.requests) == 1
    assert h.delays == []
    assert caught.value.status == 401
    message = str(caught.value)
    assert "SYNCD_API_KEY" in message
    assert "'mx'" in message
    assert KEY not in message


def test_404_is_not_found_without_retry() -> None:
    h = Harness(status(404))
    with pytest.raises(ApiNotFound) as caught:
        h.run(lambda c: c.get_event("evt_missing"))
    assert caught.value.status == 404
    assert len(h.requests) == 1


@pytest.mark.parametrize("code", [400, 403, 422, 301, 302])
def test_other_4xx_and_redirects_are_api_errors_with_status(code: int) -> None:
    h = Harness(status(code, Location="https://elsewhere.example/v1/events/evt_1"))
    with pytest.raises(ApiError) as caught:
        h.run(lambda c: c.get_event("evt_1"))
    assert type(caught.value) is ApiError
    assert caught.value.status == code
    assert len(h.requests) == 1  # and the redirect was not followed


def test_429_honours_retry_after_seconds() -> None:
    h = Harness(status(429, **{"Retry-After": "7"}), ok({"id": "evt_1"}))
    assert h.run(lambda c: c.get_event("evt_1")) == {"id": "evt_1"}
    assert h.delays == [7.0]
    assert len(h.requests) == 2


def test_429_honours_retry_after_http_date() -> None:
    now = datetime(2026, 11, 27, 18, 4, 5, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=42), usegmt=True)
    h = Harness(
        status(429, **{"Retry-After": when}),
        ok({"id": "evt_1"}),
        clock=now.timestamp,
    )
    h.run(lambda c: c.get_event("evt_1"))
    assert h.delays == [42.0]


def test_retry_after_in_the_past_means_now() -> None:
    now = datetime(2026, 11, 27, 18, 4, 5, tzinfo=UTC)
    when = format_datetime(now - timedelta(minutes=5), usegmt=True)
    h = Harness(status(429, **{"Retry-After": when}), ok({"id": "e"}), clock=now.timestamp)
    h.run(lambda c: c.get_event("e"))
    assert h.delays == [0.0]


def test_retry_after_is_capped() -> None:
    h = Harness(status(429, **{"Retry-After": "86400"}), ok({"id": "e"}), max_retry_after=60.0)
    h.run(lambda c: c.get_event("e"))
    assert h.delays == [60.0]


@pytest.mark.parametrize("header", [None, "soon", "-3", "nan"])
def test_429_without_usable_retry_after_backs_off(header: str | None) -> None:
    headers = {} if header is None else {"Retry-After": header}
    h = Harness(status(429, **headers), ok({"id": "e"}), backoff_base=0.5)
    h.run(lambda c: c.get_event("e"))
    (delay,) = h.delays
    assert 0.0 <= delay <= 0.5


def test_503_retry_after_is_honoured_too() -> None:
    h = Harness(status(503, **{"Retry-After": "3"}), ok({"id": "e"}))
    h.run(lambda c: c.get_event("e"))
    assert h.delays == [3.0]


def test_repeated_429_is_rate_limited_after_max_attempts() -> None:
    h = Harness(*[status(429, **{"Retry-After": "1"}) for _ in range(4)], max_attempts=4)
    with pytest.raises(ApiRateLimited) as caught:
        h.run(lambda c: c.get_event("e"))
    assert caught.value.status == 429
    assert len(h.requests) == 4
    assert h.delays == [1.0, 1.0, 1.0]  # no sleep after the last attempt
    assert "4 attempt" in str(caught.value)


def test_5xx_then_success() -> None:
    h = Harness(status(502), status(500), ok({"id": "e"}), rng=random.Random(1))
    assert h.run(lambda c: c.get_event("e")) == {"id": "e"}
    assert len(h.requests) == 3
    assert len(h.delays) == 2
    assert 0.0 <= h.delays[0] <= 0.5
    assert 0.0 <= h.delays[1] <= 1.0


def test_repeated_5xx_is_unavailable_after_max_attempts() -> None:
    h = Harness(*[status(500) for _ in range(3)], max_attempts=3)
    with pytest.raises(ApiUnavailable) as caught:
        h.run(lambda c: c.get_event("e"))
    assert len(h.requests) == 3
    assert len(h.delays) == 2
    assert caught.value.status == 500
    assert "3 attempt" in str(caught.value)


def test_last_failure_decides_between_rate_limited_and_unavailable() -> None:
    h = Harness(status(429), status(503), max_attempts=2)
    with pytest.raises(ApiUnavailable):
        h.run(lambda c: c.get_event("e"))


class CeilingRng(random.Random):
    """Always picks the top of the jitter range, so the backoff ceiling shows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_is_exponential_and_capped() -> None:
    h = Harness(
        *[status(500) for _ in range(6)],
        max_attempts=6,
        backoff_base=0.5,
        backoff_max=3.0,
        rng=CeilingRng(),
    )
    with pytest.raises(ApiUnavailable):
        h.run(lambda c: c.get_event("e"))
    assert h.delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_max_attempts_one_means_no_retry() -> None:
    h = Harness(status(503), max_attempts=1)
    with pytest.raises(ApiUnavailable):
        h.run(lambda c: c.get_event("e"))
    assert h.delays == []


# -- transport errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transport_errors_are_retried(error: Exception) -> None:
    h = Harness(error, ok({"id": "e"}))
    assert h.run(lambda c: c.get_event("e")) == {"id": "e"}
    assert len(h.requests) == 2
    assert len(h.delays) == 1


@pytest.mark.parametrize(
    "make_error",
    [lambda: httpx.ConnectError("connection refused"), lambda: httpx.ReadTimeout("timed out")],
    ids=["connect", "read-timeout"],
)
def test_persistent_transport_errors_become_unavailable(
    make_error: Callable[[], Exception],
) -> None:
    h = Harness(*[make_error() for _ in range(3)], max_attempts=3)
    with pytest.raises(ApiUnavailable) as caught:
        h.run(lambda c: c.get_event("e"))
    assert len(h.requests) == 3
    assert caught.value.status is None
    assert not isinstance(caught.value, httpx.HTTPError)
    assert isinstance(caught.value.__cause__, httpx.TransportError)
    assert type(caught.value.__cause__).__name__ in str(caught.value)


def test_non_transient_httpx_error_is_translated_without_retry() -> None:
    h = Harness(httpx.UnsupportedProtocol("no such scheme"))
    with pytest.raises(ApiError) as caught:
        h.run(lambda c: c.get_event("e"))
    assert len(h.requests) == 1
    assert isinstance(caught.value.__cause__, httpx.UnsupportedProtocol)


def test_on_response_reports_every_attempt() -> None:
    h = Harness(httpx.ConnectError("x"), status(503), listing([]))
    h.all_pages("orders")
    assert h.outcomes == [("orders.list", "error"), ("orders.list", 503), ("orders.list", 200)]


def test_a_failing_on_response_hook_does_not_break_requests() -> None:
    def broken(endpoint: str, outcome: int | str) -> None:
        raise RuntimeError("metrics are down")

    h = Harness(ok({"id": "e"}), on_response=broken)
    assert h.run(lambda c: c.get_event("e")) == {"id": "e"}


# -- pagination -------------------------------------------------------------------------


def test_follows_links_next() -> None:
    h = Harness(
        listing(
            [{"id": "1"}, {"id": "2"}],
            current=1,
            total_pages=3,
            next_url=f"{API}/events?cursor=abc&per_page=2",
        ),
        listing(
            [{"id": "3"}, {"id": "4"}],
            current=2,
            total_pages=3,
            next_url=f"{API}/events?cursor=def&per_page=2",
        ),
        listing([{"id": "5"}], current=3, total_pages=3),
    )
    pages = h.all_pages("events", per_page=2)
    assert ids(pages) == ["1", "2", "3", "4", "5"]
    assert [p.number for p in pages] == [1, 2, 3]
    assert h.requests[1].url.params["cursor"] == "abc"
    assert h.requests[2].url.params["cursor"] == "def"
    assert pages[-1].next is None
    assert all(r.headers["Authorization"] == f"Bearer {KEY}" for r in h.requests)


def test_links_next_may_be_relative_to_the_api() -> None:
    h = Harness(
        listing([{"id": "1"}], current=1, next_url="/v1/events?page=2&per_page=100"),
        listing([{"id": "2"}], current=2, total_pages=2),
    )
    assert ids(h.all_pages()) == ["1", "2"]
    assert h.requests[1].url.host == "shop.example"


def test_pages_by_number_when_links_are_missing() -> None:
    since = datetime(2026, 11, 27, 18, 4, 5, tzinfo=UTC)
    h = Harness(
        listing([{"id": "1"}], current=1, total_pages=3, total=3),
        listing([{"id": "2"}], current=2, total_pages=3, total=3),
        listing([{"id": "3"}], current=3, total_pages=3, total=3),
    )
    pages = h.all_pages("events", since=since, per_page=1)
    assert ids(pages) == ["1", "2", "3"]
    assert [dict(r.url.params) for r in h.requests] == [
        {"created_at_min": "2026-11-27T18:04:05+00:00", "page": str(n), "per_page": "1"}
        for n in (1, 2, 3)
    ]
    assert pages[0].total == 3
    assert pages[0].total_pages == 3
    assert pages[-1].next is None


def test_pagination_numbers_may_come_as_strings() -> None:
    h = Harness(
        ok(
            {
                "data": [{"id": "1"}],
                "meta": {"pagination": {"current_page": "1", "total_pages": "2"}},
            }
        ),
        ok(
            {
                "data": [{"id": "2"}],
                "meta": {"pagination": {"current_page": "2", "total_pages": "2"}},
            }
        ),
    )
    assert ids(h.all_pages()) == ["1", "2"]


def test_stops_at_an_empty_page() -> None:
    h = Harness(
        listing([{"id": "1"}], current=1),  # no total_pages: go on until empty
        listing([], current=2),
    )
    pages = h.all_pages()
    assert ids(pages) == ["1"]
    assert len(h.requests) == 2
    assert pages[-1].next is None


def test_an_empty_page_stops_even_with_a_next_link() -> None:
    h = Harness(listing([], current=1, total_pages=5, next_url=f"{API}/events?page=2"))
    pages = h.all_pages()
    assert len(pages) == 1
    assert pages[0].items == []
    assert pages[0].next is None
    assert len(h.requests) == 1


def test_a_page_without_meta_is_page_one_of_unknown() -> None:
    h = Harness(ok({"data": [{"id": "1"}]}), ok({"data": []}))
    pages = h.all_pages()
    assert ids(pages) == ["1"]
    assert h.requests[1].url.params["page"] == "2"


def test_a_self_linking_page_is_refused() -> None:
    loop = f"{API}/events?page=2"
    h = Harness(
        listing([{"id": "1"}], current=1, next_url=loop),
        listing([{"id": "2"}], current=2, next_url=loop),
    )
    with pytest.raises(WireError):
        h.all_pages()
    assert len(h.requests) == 2


def test_a_server_ignoring_page_numbers_is_refused() -> None:
    h = Harness(
        listing([{"id": "1"}], current=1, total_pages=3),
        listing([{"id": "1"}], current=1, total_pages=3),
    )
    with pytest.raises(WireError):
        h.all_pages()


@pytest.mark.parametrize(
    "foreign",
    [
        "https://evil.example/v1/events?page=2",
        "http://shop.example/v1/events?page=2",  # downgrade to plain HTTP
        "https://shop.example:8443/v1/events?page=2",
        "//evil.example/v1/events?page=2",
    ],
)
def test_foreign_next_link_is_refused(foreign: str) -> None:
    h = Harness(listing([{"id": "1"}], current=1, total_pages=2, next_url=foreign))
    with pytest.raises(ApiError) as caught:
        h.all_pages()
    assert not isinstance(caught.value, WireError)
    assert len(h.requests) == 1  # the token never left for the other origin
    assert KEY not in str(caught.value)


def test_foreign_url_in_a_saved_cursor_is_refused() -> None:
    cursor = PageCursor(resource="events", page=2, url="https://evil.example/v1/events?page=2")
    h = Harness()

    async def call(client: ShopertiClient) -> None:
        async for _ in client.pages("events", since=None, start=cursor):
            pass

    with pytest.raises(ApiError):
        h.run(call)
    assert h.requests == []


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"id": "1"}},
        {"data": None},
        {"items": []},
        {"data": [{"id": "1"}, "2"]},
        {"data": [{"id": "1"}], "meta": []},
        {"data": [{"id": "1"}], "meta": {"pagination": "page 1"}},
        {"data": [{"id": "1"}], "meta": {"pagination": {"current_page": "first"}}},
        {"data": [{"id": "1"}], "meta": {"pagination": {"current_page": 1, "total_pages": 0}}},
        {"data": [{"id": "1"}], "meta": {"pagination": {"links": {"next": 2}}}},
        [{"id": "1"}],
    ],
    ids=[
        "data-object",
        "data-null",
        "no-data",
        "item-not-object",
        "meta-not-object",
        "pagination-not-object",
        "current-page-not-number",
        "total-pages-zero",
        "next-not-string",
        "bare-list",
    ],
)
def test_malformed_page_is_a_wire_error(body: Any) -> None:
    h = Harness(ok(body))
    with pytest.raises(WireError):
        h.all_pages()


def test_html_page_is_a_wire_error() -> None:
    h = Harness(httpx.Response(200, text="<!doctype html><title>Bad gateway</title>"))
    with pytest.raises(WireError) as caught:
        h.all_pages()
    assert "<title>" not in str(caught.value)  # bodies stay out of messages


def test_page_asked_by_number_must_be_the_page_returned() -> None:
    h = Harness(listing([{"id": "5"}], current=3, total_pages=3))
    with pytest.raises(WireError):
        h.all_pages()


# -- resuming ---------------------------------------------------------------------------


def first_page_then_resume(
    first: list[httpx.Response], rest: list[httpx.Response], resource: str
) -> tuple[PageCursor, list[Page], Harness]:
    """Read one page, checkpoint its cursor through JSON, resume in a fresh client."""
    h1 = Harness(*first)

    async def first_page(client: ShopertiClient) -> Page:
        async for page in client.pages(resource, since=None, per_page=1):  # type: ignore[arg-type]
            return page
        raise AssertionError("no page")

    page = h1.run(first_page)
    assert page.next is not None
    saved = json.dumps(page.next.to_dict())

    cursor = PageCursor.from_dict(json.loads(saved))
    assert cursor == page.next
    h2 = Harness(*rest)
    pages = h2.all_pages(resource, start=cursor)
    return cursor, pages, h2


def test_resume_from_a_serialized_link_cursor() -> None:
    cursor, pages, h2 = first_page_then_resume(
        [listing([{"id": "1"}], current=1, next_url=f"{API}/orders?after=o1")],
        [
            listing([{"id": "2"}], current=2, next_url=f"{API}/orders?after=o2"),
            listing([{"id": "3"}], current=3, total_pages=3),
        ],
        "orders",
    )
    assert cursor.url == f"{API}/orders?after=o1"
    assert ids(pages) == ["2", "3"]
    assert str(h2.requests[0].url) == f"{API}/orders?after=o1"


def test_resume_from_a_serialized_page_number_cursor() -> None:
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    h1 = Harness(listing([{"id": "1"}], current=1, total_pages=3))

    async def first_page(client: ShopertiClient) -> Page:
        async for page in client.pages("customers", since=since, per_page=1):
            return page
        raise AssertionError("no page")

    page = h1.run(first_page)
    assert page.next is not None
    cursor = PageCursor.from_dict(json.loads(json.dumps(page.next.to_dict())))

    h2 = Harness(
        listing([{"id": "2"}], current=2, total_pages=3),
        listing([{"id": "3"}], current=3, total_pages=3),
    )
    # `since` given again (or not) does not change a resumed query.
    pages = h2.all_pages("customers", since=None, start=cursor)
    assert ids(pages) == ["2", "3"]
    assert [dict(r.url.params) for r in h2.requests] == [
        {"updated_at_min": "2026-01-02T03:04:05+00:00", "page": str(n), "per_page": "1"}
        for n in (2, 3)
    ]


@pytest.mark.parametrize(
    "data",
    [
        {"resource": "products", "page": 1},
        {"resource": "events", "page": 0},
        {"resource": "events", "page": "2"},
        {"resource": "events", "page": 2, "per_page": 500},
        {"resource": "events", "page": 2, "since": 5},
        {"resource": "events"},
        {"resource": "events", "page": 2, "token": "x"},
    ],
)
def test_cursor_from_dict_rejects_what_it_did_not_write(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        PageCursor.from_dict(data)


def test_cursor_for_another_resource_is_refused() -> None:
    client = ShopertiClient(API, KEY, transport=httpx.MockTransport(lambda r: ok({})))
    with pytest.raises(ValueError):
        client.pages("orders", since=None, start=PageCursor(resource="events", page=2))
    asyncio.run(client.aclose())


@pytest.mark.parametrize("per_page", [0, 101])
def test_per_page_is_checked_before_any_request(per_page: int) -> None:
    client = ShopertiClient(API, KEY, transport=httpx.MockTransport(lambda r: ok({})))
    with pytest.raises(ValueError):
        client.pages("events", since=None, per_page=per_page)
    asyncio.run(client.aclose())


# -- since ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (datetime(2026, 11, 27, 18, 4, 5, tzinfo=UTC), "2026-11-27T18:04:05+00:00"),
        (
            datetime(2026, 11, 27, 12, 4, 5, tzinfo=timezone(timedelta(hours=-6))),
            "2026-11-27T18:04:05+00:00",
        ),
        (datetime(2026, 11, 27, 18, 4, 5), "2026-11-27T18:04:05+00:00"),  # naive is UTC
        # Truncated, never rounded up: an inclusive lower bound must not skip anything.
        (datetime(2026, 11, 27, 18, 4, 5, 999_999, tzinfo=UTC), "2026-11-27T18:04:05+00:00"),
    ],
    ids=["utc", "mexico-city", "naive", "microseconds"],
)
def test_format_since(since: datetime, expected: str) -> None:
    assert format_since(since) == expected


@pytest.mark.parametrize(
    ("resource", "param"),
    [("events", "created_at_min"), ("orders", "updated_at_min"), ("customers", "updated_at_min")],
)
def test_since_parameter_per_resource(resource: str, param: str) -> None:
    naive = datetime(2026, 11, 27, 18, 4, 5)
    h = Harness(listing([]))
    h.all_pages(resource, since=naive)
    assert h.requests[0].url.path == f"/v1/{resource}"
    assert h.requests[0].url.params[param] == "2026-11-27T18:04:05+00:00"


def test_no_since_lists_everything() -> None:
    h = Harness(listing([]))
    h.all_pages("orders", since=None)
    assert "updated_at_min" not in h.requests[0].url.params


# -- the key stays secret ---------------------------------------------------------------


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def error_texts(exc: BaseException, *, ours_only: bool) -> list[str]:
    """str and repr of every exception in the chain (only syncd's if ``ours_only``)."""
    texts = []
    current: BaseException | None = exc
    while current is not None:
        if not ours_only or isinstance(current, SyncdError):
            texts += [str(current), repr(current)]
        current = current.__cause__ or current.__context__
    return texts


keys = st.text(alphabet=string.ascii_letters + string.digits + "_-.", min_size=24, max_size=64)

# name -> (answers for a key, whether the scripted httpx error itself echoes the key)
SCENARIOS: dict[str, tuple[Callable[[str], list[Answer]], bool]] = {
    "401": (lambda key: [status(401)], False),
    "403": (lambda key: [status(403)], False),
    "404": (lambda key: [status(404)], False),
    "5xx": (lambda key: [status(500), status(502), status(503)], False),
    "429": (lambda key: [status(429), status(429), status(429)], False),
    "connect": (lambda key: [httpx.ConnectError("refused") for _ in range(3)], False),
    "timeout": (lambda key: [httpx.ReadTimeout("timed out") for _ in range(3)], False),
    "html": (lambda key: [httpx.Response(200, text="<html/>")], False),
    # Even a transport message that echoed the key must not carry it into ours.
    "connect-echo": (lambda key: [httpx.ConnectError(f"refused {key}") for _ in range(3)], True),
    "protocol-echo": (lambda key: [httpx.LocalProtocolError(f"bad header Bearer {key}")], True),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=keys, scenario=st.sampled_from(sorted(SCENARIOS)))
def test_key_never_in_repr_urls_logs_or_errors(key: str, scenario: str) -> None:
    make_answers, echoes = SCENARIOS[scenario]
    collect = Collect()
    logger = logging.getLogger("syncd.shoperti")
    logger.addHandler(collect)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    reprs: list[str] = []

    async def call(client: ShopertiClient) -> dict[str, Any]:
        reprs.append(repr(client))
        return await client.get_event("evt_1")

    try:
        h = Harness(*make_answers(key), key=key, max_attempts=3, store="mx")
        with pytest.raises(SyncdError) as caught:
            h.run(call)
    finally:
        logger.removeHandler(collect)
        logger.setLevel(old_level)
    assert reprs and key not in reprs[0]
    for text in error_texts(caught.value, ours_only=echoes):
        assert key not in text
    for request in h.requests:
        assert key not in str(request.url)
    for record in collect.records:
        assert key not in record.getMessage()
        assert key not in repr(record.__dict__)


def test_repr_shows_the_url_only() -> None:
    client = ShopertiClient(API, KEY, store="mx")
    assert repr(client) == "ShopertiClient(api_url='https://shop.example/v1', store='mx')"
    asyncio.run(client.aclose())


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "shop.example/v1",
        "ftp://shop.example/v1",
        "https://user:secret@shop.example/v1",
        "https://shop.example/v1?key=abc",
    ],
)
def test_bad_api_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ShopertiClient(url, KEY)
    assert caught.value.variable == "SYNCD_API_URL"
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("key", ["", "sk_live_abc\n", "sk live abc", "sk_live_\u00e9t\u00e9"])
def test_bad_api_key_is_a_config_error_that_does_not_show_it(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ShopertiClient(API, key)
    assert caught.value.variable == "SYNCD_API_KEY"
    if key:
        assert key.strip() not in str(caught.value)


def test_one_object_requests_wait_while_a_429_keeps_the_gate_closed() -> None:
    # Verification, refresh and audit fetch one object at a time, many in
    # flight: one 429 must hold them all for its Retry-After, not only the
    # request it answered, or the API sees a storm of refused requests.
    sent: list[str] = []
    paused = asyncio.Event()
    release = asyncio.Event()
    delays: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path.rsplit("/", 1)[1])
        if len(sent) == 1:
            return status(429, **{"Retry-After": "3"})
        return ok({"id": sent[-1]})

    async def sleep(delay: float) -> None:
        delays.append(delay)
        paused.set()
        await release.wait()

    async def main() -> list[str]:
        transport = httpx.MockTransport(handler)
        async with ShopertiClient(API, KEY, transport=transport, sleep=sleep) as client:
            first = asyncio.create_task(client.get_copy("order", "ord_1"))
            await asyncio.wait_for(paused.wait(), 5)
            others = [asyncio.create_task(client.get_copy("order", f"ord_{n}")) for n in (2, 3)]
            for _ in range(20):
                await asyncio.sleep(0)
            assert sent == ["ord_1"], sent  # nobody asks while the API says it is busy
            release.set()
            copies = await asyncio.wait_for(asyncio.gather(first, *others), 5)
            return [str(copy.data["id"]) for copy in copies]

    assert asyncio.run(main()) == ["ord_1", "ord_2", "ord_3"]
    assert delays == [3.0]
    assert sorted(sent) == ["ord_1", "ord_1", "ord_2", "ord_3"]
