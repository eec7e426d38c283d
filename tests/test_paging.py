"""Concurrent, adaptive paging of the API client, against ``httpx.MockTransport``.

A scripted API counts the requests it is answering at once, refuses (429)
beyond a limit, answers pages out of order and stamps each with a Date
header; the client's ``sleep`` is a fake that never waits for real.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.config import load_settings
from syncd.errors import ApiError, ConfigError
from syncd.shoperti.client import Page, PageCursor, ShopertiClient

API = "https://shop.example/v1"
KEY = "sk_live_paging_7Hq2"
PER_PAGE = 10


class FakeApi:
    """``total_items`` orders, ``PER_PAGE`` a page, with knobs for what a real API does."""

    def __init__(
        self,
        total_items: int,
        *,
        total_pages: bool = True,
        links: bool = True,
        busy_above: int | None = None,
        busy_until_page: int | None = None,
        retry_after: str = "3",
        hold: dict[int, int] | None = None,
        default_hold: int = 3,
        empty_from: int | None = None,
        fail_page: int | None = None,
        future_date_page: int | None = None,
        count_pages: int | None = None,
    ) -> None:
        self.total_items = total_items
        self.total_pages = total_pages
        self.links = links
        self.busy_above = busy_above
        self.busy_until_page = busy_until_page
        self.retry_after = retry_after
        self.hold = hold or {}
        self.default_hold = default_hold
        self.empty_from = empty_from
        self.fail_page = fail_page
        self.future_date_page = future_date_page
        self.count_pages = count_pages  # a total_pages that undercounts
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[tuple[int, int]] = []  # (page, requests in flight before it)
        self.answered: list[int] = []  # pages answered 200, in the order answered
        self.arrived_at: dict[int, datetime] = {}
        self.answered_at: dict[int, datetime] = {}
        self.refused = 0
        self.pausing = 0  # set by the fake sleep
        self.sent_while_paused = 0
        self.sleeps: list[float] = []
        self.followed_links = 0

    @property
    def pages(self) -> int:
        return -(-self.total_items // PER_PAGE)

    async def sleep(self, seconds: float) -> None:
        """The client's sleep: records the delay and lets the loop run a while."""
        self.sleeps.append(seconds)
        self.pausing += 1
        try:
            for _ in range(30):
                await asyncio.sleep(0)
        finally:
            self.pausing -= 1

    async def handler(self, request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        if "via" in request.url.params:
            self.followed_links += 1
        self.arrivals.append((page, self.in_flight))
        if self.pausing:
            self.sent_while_paused += 1
        busy = self.busy_above is not None and (
            self.busy_until_page is None or page <= self.busy_until_page
        )
        if busy and self.in_flight >= (self.busy_above or 0):
            self.refused += 1
            return httpx.Response(429, headers={"Retry-After": self.retry_after})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.arrived_at[page] = datetime.now(UTC)
        try:
            for _ in range(self.hold.get(page, self.default_hold)):
                await asyncio.sleep(0)
            if page == self.fail_page:
                return httpx.Response(400, json={"error": "bad"})
            return self._page(request, page)
        finally:
            self.in_flight -= 1
            self.answered_at[page] = datetime.now(UTC)

    def _page(self, request: httpx.Request, page: int) -> httpx.Response:
        self.answered.append(page)
        first = (page - 1) * PER_PAGE
        empty = self.empty_from is not None and page >= self.empty_from
        last = 0 if empty else min(first + PER_PAGE, self.total_items)
        items = [{"id": f"o{n}"} for n in range(first, last)]
        pagination: dict[str, Any] = {"current_page": page, "total": self.total_items}
        if self.total_pages:
            pagination["total_pages"] = self.count_pages or self.pages
        if self.links and last < self.total_items:
            pagination["links"] = {
                "next": str(request.url.copy_merge_params({"page": page + 1, "via": "link"}))
            }
        when = datetime(2000, 1, 1, tzinfo=UTC)
        if page == self.future_date_page:
            when = datetime(2099, 1, 1, tzinfo=UTC)
        return httpx.Response(
            200,
            json={"data": items, "meta": {"pagination": pagination}},
            headers={"Date": format_datetime(when, usegmt=True)},
        )


def read_all(
    api: FakeApi,
    concurrency: int,
    *,
    start: PageCursor | None = None,
    **client_kwargs: Any,
) -> list[Page]:
    async def main() -> list[Page]:
        transport = httpx.MockTransport(api.handler)
        async with ShopertiClient(
            API, KEY, transport=transport, sleep=api.sleep, **client_kwargs
        ) as client:
            listing = client.pages(
                "orders", since=None, per_page=PER_PAGE, start=start, concurrency=concurrency
            )
            return [page async for page in listing]

    return asyncio.run(main())


def ids(pages: list[Page]) -> list[str]:
    return [item["id"] for page in pages for item in page.items]


def test_pages_come_in_order_with_sequential_cursors_while_answered_out_of_order() -> None:
    # Later pages answer sooner: page 2 holds longest within each group of four.
    api = FakeApi(95, hold={n: 4 * (4 - n % 4) for n in range(1, 11)})
    pages = read_all(api, 4)
    assert [page.number for page in pages] == list(range(1, 11))
    assert ids(pages) == [f"o{n}" for n in range(95)]  # nothing skipped, nothing twice
    assert api.answered != sorted(api.answered), "answers should have come out of order"
    assert api.max_in_flight == 4
    # Each page's next is what a sequential listing would checkpoint: the page after it.
    assert [page.next.page if page.next else None for page in pages] == [*range(2, 11), None]
    assert all(page.next is None or page.next.url is None for page in pages[1:])
    assert api.refused == 0 and api.sleeps == []


def test_at_most_concurrency_requests_in_flight() -> None:
    api = FakeApi(300, default_hold=6)
    pages = read_all(api, 3)
    assert len(pages) == 30
    assert api.max_in_flight == 3
    assert max(before for _, before in api.arrivals) <= 2


def test_the_pager_holds_a_bounded_number_of_pages_ahead_of_the_reader() -> None:
    api = FakeApi(500, default_hold=1)

    async def main() -> tuple[int, int]:
        transport = httpx.MockTransport(api.handler)
        async with ShopertiClient(API, KEY, transport=transport, sleep=api.sleep) as client:
            listing = client.pages("orders", since=None, per_page=PER_PAGE, concurrency=2)
            async with contextlib_aclosing(listing):
                await anext(listing)
                await anext(listing)  # the reader is at page 2 and stops reading
                for _ in range(200):
                    await asyncio.sleep(0)
                asked_while_stalled = len(api.arrivals)
                rest = [page async for page in listing]
                return asked_while_stalled, len(rest)

    asked, rest = asyncio.run(main())
    # Page 2 handed out, then at most 2 * concurrency pages after it asked for.
    assert asked <= 2 + 2 * 2
    assert rest == 50 - 2
    assert len(api.arrivals) == 50


def contextlib_aclosing(listing: Any) -> Any:
    import contextlib

    return contextlib.aclosing(listing)


def test_429_halves_the_window_honours_retry_after_and_grows_back_to_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The API takes 2 at a time while pages 1-12 are read, then as many as come.
    api = FakeApi(3000, busy_above=2, busy_until_page=12, retry_after="7")
    with caplog.at_level(logging.INFO, logger="syncd.shoperti"):
        pages = read_all(api, 8)
    assert [page.number for page in pages] == list(range(1, 301))
    assert ids(pages) == [f"o{n}" for n in range(3000)]
    windows = [
        (record.reason, record.window)  # type: ignore[attr-defined]
        for record in caplog.records
        if record.getMessage() == "api.concurrency"
    ]
    # Halved, once per window of requests: 8 -> 4 -> 2 (never one halving per 429).
    assert windows[:2] == [("429", 4), ("429", 2)]
    # ... then one more after each run of 4 x window successes (32 x to get back
    # to the window last refused), up to the limit.
    grows = [window for reason, window in windows if reason == "grow"]
    assert grows[-6:] == [3, 4, 5, 6, 7, 8]
    assert all(window <= 8 for _, window in windows)
    # Retry-After was honoured (7 s, by the client's sleep) and nothing was sent meanwhile.
    assert api.refused >= 1 and api.sleeps and set(api.sleeps) == {7.0}
    assert api.sent_while_paused == 0
    # Few refusals: the first burst of 8 (6 refused), one more halving, a probe or two.
    assert api.refused <= 12, api.refused
    # Back at the limit once the API allowed it.
    assert max(before for page, before in api.arrivals if page > 290) + 1 == 8


def test_a_429_storm_settles_at_what_the_api_allows() -> None:
    api = FakeApi(400, busy_above=2, retry_after="1")
    pages = read_all(api, 8)
    assert ids(pages) == [f"o{n}" for n in range(400)]
    # The 40 pages get through with a handful of refusals: the window finds 2 and stays.
    assert api.refused <= 8, (api.refused, len(api.arrivals))
    assert max(before for page, before in api.arrivals if page > 20) <= 2


def test_an_api_that_allows_a_fixed_number_is_probed_ever_more_rarely() -> None:
    api = FakeApi(4000, busy_above=2, retry_after="1")
    pages = read_all(api, 4)
    assert ids(pages) == [f"o{n}" for n in range(4000)]
    refused_at = [i for i, (_, before) in enumerate(api.arrivals) if before >= 2]
    assert len(refused_at) == api.refused
    assert api.refused <= 6, refused_at  # of about 400 requests
    gaps = [b - a for a, b in itertools.pairwise(refused_at)]
    assert gaps == sorted(gaps) and gaps[-1] > 2 * gaps[0], gaps


def test_the_next_listing_of_the_store_starts_at_the_window_the_api_taught() -> None:
    api = FakeApi(200, busy_above=2, retry_after="1")

    async def main() -> tuple[int, int]:
        transport = httpx.MockTransport(api.handler)
        async with ShopertiClient(API, KEY, transport=transport, sleep=api.sleep) as client:
            async for _ in client.pages("orders", since=None, per_page=PER_PAGE, concurrency=8):
                pass
            refused_first = api.refused
            api.arrivals.clear()
            async for _ in client.pages("orders", since=None, per_page=PER_PAGE, concurrency=8):
                pass
            return refused_first, api.refused - refused_first

    first, second = asyncio.run(main())
    assert first >= 1
    assert second <= 1  # no new burst of 8: at most one probe
    assert max(before for _, before in api.arrivals) <= 2


def test_without_total_pages_links_next_is_followed_one_page_at_a_time() -> None:
    api = FakeApi(95, total_pages=False)
    pages = read_all(api, 4)
    assert ids(pages) == [f"o{n}" for n in range(95)]
    assert api.max_in_flight == 1
    assert api.followed_links == 9  # every page after the first came by links.next
    assert pages[-1].next is None


def test_without_total_pages_or_links_page_numbers_are_read_one_at_a_time() -> None:
    api = FakeApi(95, total_pages=False, links=False)
    pages = read_all(api, 4)
    # Without a count the listing goes on until an empty page.
    assert ids(pages) == [f"o{n}" for n in range(95)]
    assert [page.number for page in pages] == list(range(1, 12))
    assert pages[-1].items == [] and api.max_in_flight == 1


def test_with_total_pages_pages_are_asked_for_by_number_even_when_links_are_given() -> None:
    api = FakeApi(95)
    read_all(api, 4)
    assert api.followed_links == 0
    assert sorted(page for page, _ in api.arrivals) == list(range(1, 11))


def test_concurrency_one_stays_sequential() -> None:
    api = FakeApi(95)
    pages = read_all(api, 1)
    assert ids(pages) == [f"o{n}" for n in range(95)]
    assert api.max_in_flight == 1 and api.followed_links == 9


def test_a_saved_cursor_resumes_at_its_page_and_goes_on_concurrently() -> None:
    api = FakeApi(95)
    start = PageCursor("orders", page=5, per_page=PER_PAGE)
    pages = read_all(api, 4, start=start)
    assert [page.number for page in pages] == list(range(5, 11))
    assert ids(pages) == [f"o{n}" for n in range(40, 95)]
    assert min(page for page, _ in api.arrivals) == 5
    assert api.max_in_flight > 1


def test_an_empty_page_before_the_counted_end_ends_the_listing() -> None:
    api = FakeApi(100, empty_from=6, default_hold=2)
    pages = read_all(api, 4)
    assert [page.number for page in pages] == [1, 2, 3, 4, 5, 6]
    assert pages[-1].items == [] and pages[-1].next is None
    assert ids(pages) == [f"o{n}" for n in range(50)]


def test_a_links_next_past_the_counted_pages_is_still_followed() -> None:
    api = FakeApi(95, count_pages=5)
    pages = read_all(api, 4)
    assert ids(pages) == [f"o{n}" for n in range(95)]
    assert [page.number for page in pages] == list(range(1, 11))
    assert pages[-1].next is None and pages[4].next is not None


def test_a_failing_page_stops_the_listing_after_the_pages_before_it() -> None:
    api = FakeApi(100, fail_page=4, default_hold=2)
    got: list[int] = []

    async def main() -> None:
        transport = httpx.MockTransport(api.handler)
        async with ShopertiClient(API, KEY, transport=transport, sleep=api.sleep) as client:
            async for page in client.pages("orders", since=None, per_page=PER_PAGE, concurrency=4):
                got.append(page.number)

    with pytest.raises(ApiError, match="HTTP 400"):
        asyncio.run(main())
    assert got == [1, 2, 3]


def test_read_at_is_when_that_pages_request_was_sent_or_the_later_date_header() -> None:
    api = FakeApi(80, future_date_page=3, default_hold=5)
    before = datetime.now(UTC)
    pages = read_all(api, 2)
    by_number = {page.number: page for page in pages}
    # The API's clock ahead of ours counts.
    assert by_number[3].read_at == datetime(2099, 1, 1, tzinfo=UTC)
    for number, page in by_number.items():
        if number == 3:
            continue
        assert page.read_at is not None
        # Sent before the API saw it ...
        assert before <= page.read_at <= api.arrived_at[number]
        if number >= 4:
            # ... and, with two in flight, not before an earlier page was answered:
            # a page waiting for a slot is stamped when it is sent, not when queued.
            earlier = min(api.answered_at[n] for n in range(2, number))
            assert page.read_at >= earlier - timedelta(microseconds=1)


def test_bad_concurrency_is_refused_before_any_request() -> None:
    async def main(concurrency: Any) -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(500))
        async with ShopertiClient(API, KEY, transport=transport) as client:
            client.pages("orders", since=None, concurrency=concurrency)

    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="concurrency"):
            asyncio.run(main(bad))


# --- the setting ----------------------------------------------------------------------


def test_api_concurrency_defaults_to_4_and_is_read_from_the_variable() -> None:
    base = {"SYNCD_API_URL": API, "SYNCD_API_KEY": KEY}
    assert load_settings(base).store().api_concurrency == 4
    assert load_settings({**base, "SYNCD_API_CONCURRENCY": "8"}).store().api_concurrency == 8


@pytest.mark.parametrize("raw", ["0", "65", "four", "2.5"])
def test_a_bad_api_concurrency_stops_start_up_with_one_line_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNCD_API_CONCURRENCY": raw})
    message = str(caught.value)
    assert message.startswith("SYNCD_API_CONCURRENCY: ") and "\n" not in message


def test_api_concurrency_per_store_in_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "stores.toml"
    config.write_text(
        '[[stores]]\nname = "a"\napi_url = "https://a.example/v1"\napi_key = "k1"\n'
        "api_concurrency = 2\n"
        '[[stores]]\nname = "b"\napi_url = "https://b.example/v1"\napi_key = "k2"\n'
    )
    settings = load_settings(
        {"SYNCD_CONFIG": str(config), "SYNCD_STORE": "a", "SYNCD_API_CONCURRENCY": "6"}
    )
    assert settings.store("a").api_concurrency == 2
    assert settings.store("b").api_concurrency == 6  # the variable is the default
    config.write_text('[[stores]]\nname = "a"\napi_concurrency = "many"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({"SYNCD_CONFIG": str(config), "SYNCD_STORE": "a"})
    assert str(caught.value).startswith("SYNCD_CONFIG store 'a' api_concurrency: ")
    config.write_text('[[stores]]\nname = "a"\napi_concurrency = 0\n')
    with pytest.raises(ConfigError, match="api_concurrency: must be between 1 and 64"):
        load_settings({"SYNCD_CONFIG": str(config), "SYNCD_STORE": "a"})
