"""The HTTP client for Shoperti's API (docs/api.md §2): the transport envelope and nothing more.

It knows how to talk to the API: the bearer token, timeouts, retries with
exponential backoff and full jitter, ``429 Retry-After``, the status codes of
docs/api.md §2, the paginated list envelope (``data`` + ``meta.pagination``) and
single objects that come bare or wrapped as ``{"data": {...}}``. It hands back
raw JSON objects (``dict[str, Any]``); turning them into typed events, orders
and customers is ``syncd.shoperti.wire``'s job.

It must never:

- know about the database (cursors are handed back as JSON-able dicts; the
  caller decides where to keep them);
- read resource fields (``id``, ``type``, ``created_at``… of an order or an
  event): the only keys it reads are those of the envelope;
- let an ``httpx`` exception reach a caller: every one becomes a
  :class:`syncd.errors.ApiError` (or :class:`~syncd.errors.WireError` for a
  body of the wrong shape) at this boundary, ``raise … from exc``;
- put the API key anywhere but the ``Authorization`` header of a request to
  the configured API origin: not in URLs, logs, exception messages or
  ``repr``; a ``links.next`` to another origin is refused, redirects are not
  followed;
- log a response body (it holds customer data).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Self, get_args
from urllib.parse import quote

import httpx
import orjson

from syncd.config import DEFAULT_API_CONCURRENCY, StoreConfig, api_key_problem, api_url_problem
from syncd.errors import (
    ApiAuthError,
    ApiError,
    ApiNotFound,
    ApiRateLimited,
    ApiUnavailable,
    ConfigError,
    WireError,
)
from syncd.resources import BY_NAME, ResourceName

__all__ = ["Page", "PageCursor", "Resource", "ShopertiClient", "format_since"]

log = logging.getLogger("syncd.shoperti")

Resource = ResourceName
RESOURCES: Final[tuple[str, ...]] = get_args(Resource)

MAX_PER_PAGE: Final = 100
USER_AGENT: Final = "syncd"
# Keep wrapped transport messages short: they end up in `events.last_error` and in logs.
MAX_REASON_CHARS: Final = 200

ResponseHook = Callable[[str, int | str], None]
Sleep = Callable[[float], Awaitable[None]]


def format_since(since: datetime) -> str:
    """``since`` as the API's ``*_min`` parameter: ISO 8601 in UTC with an offset.

    A naive datetime is taken as UTC. Sub-second precision is dropped, which
    moves the bound earlier, never later: an inclusive ``*_min`` may then
    return a few items again (ingest is idempotent) but never skips one.
    """
    aware = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    return aware.replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Everything needed to fetch one page of a listing, in this process or another.

    ``url`` is the absolute ``links.next`` the API gave, when it gave one; it is
    followed as is. Otherwise the page is asked for by number with the query
    rebuilt from ``resource``, ``since`` (already formatted) and ``per_page``.
    ``to_dict()`` / ``from_dict()`` round-trip through JSON, so a backfill can
    checkpoint a cursor in a database row and resume from it after a crash.
    """

    resource: Resource
    page: int
    per_page: int = MAX_PER_PAGE
    since: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if self.resource not in RESOURCES:
            raise ValueError(f"unknown resource {self.resource!r}; expected one of {RESOURCES}")
        if isinstance(self.page, bool) or not isinstance(self.page, int) or self.page < 1:
            raise ValueError(f"page must be an integer >= 1, not {self.page!r}")
        if (
            isinstance(self.per_page, bool)
            or not isinstance(self.per_page, int)
            or not 1 <= self.per_page <= MAX_PER_PAGE
        ):
            raise ValueError(
                f"per_page must be an integer in 1..{MAX_PER_PAGE}, not {self.per_page!r}"
            )
        if self.since is not None and not isinstance(self.since, str):
            raise ValueError(f"since must be a string or None, not {type(self.since).__name__}")
        if self.url is not None and not isinstance(self.url, str):
            raise ValueError(f"url must be a string or None, not {type(self.url).__name__}")

    def query(self) -> dict[str, str | int]:
        """The query string for asking for ``page`` by number."""
        params: dict[str, str | int] = {}
        if self.since is not None:
            params[BY_NAME[self.resource].since_param] = self.since
        params["page"] = self.page
        params["per_page"] = self.per_page
        return params

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "page": self.page,
            "per_page": self.per_page,
            "since": self.since,
            "url": self.url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PageCursor:
        """Rebuild a cursor saved by :meth:`to_dict`; ``ValueError`` if it is not one."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a page cursor is a JSON object, not {type(data).__name__}")
        unknown = set(data) - {"resource", "page", "per_page", "since", "url"}
        if unknown:
            raise ValueError(f"unknown page cursor keys: {sorted(unknown)}")
        if "resource" not in data or "page" not in data:
            raise ValueError("a page cursor needs at least 'resource' and 'page'")
        return cls(
            resource=data["resource"],
            page=data["page"],
            per_page=data.get("per_page", MAX_PER_PAGE),
            since=data.get("since"),
            url=data.get("url"),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing: raw items, where we are, and how to get the next one.

    ``next`` is None on the last page (and on an empty page, which ends a listing).
    """

    items: list[dict[str, Any]]
    number: int
    total_pages: int | None
    total: int | None
    next: PageCursor | None = None
    # When the page was read: the API's Date header, else when the request
    # was sent (its items are at least as new).
    read_at: datetime | None = None


class Copy(NamedTuple):
    """One object as the API gave it, and when it was read."""

    data: dict[str, Any]
    read_at: datetime


class _Answer(NamedTuple):
    body: Any
    date: datetime | None  # the API's clock when it answered (its Date header)
    sent_at: datetime | None = None  # when the request that got this answer was sent


# Transport errors worth another attempt; any other httpx error ends the request.
TRANSIENT_ERRORS: Final = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)


class _Transient(NamedTuple):
    """An attempt that failed in a way another attempt may not."""

    status: int | None  # the HTTP status, None for a transport error
    reason: str
    delay: float | None  # what the API asked for (Retry-After), else None
    cause: BaseException | None  # the transport error, raised from on the last attempt
    give_up: Callable[[int], ApiError]  # the error once the attempts (its argument) are spent


def _read_time(answer: _Answer, sent_at: datetime) -> datetime:
    """When a copy was read: the later of the API's Date header (its clock, in
    whole seconds) and when we sent the request (ours, in microseconds), so
    that two reads in one second stay in order while clocks agree, and a
    platform clock ahead of ours still counts."""
    return max(answer.date, sent_at) if answer.date is not None else sent_at


def _http_date(value: str | None) -> datetime | None:
    """An HTTP Date header as a UTC time; None if absent or unreadable.

    A copy read from the API is placed in time on the API's own clock when it
    says what time it is, so that it compares with the platform's event times
    (docs/apply-rules.md); our clock is the fallback."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: httpx.URL) -> _Origin:
        default_port = 443 if url.scheme == "https" else 80
        return cls(url.scheme, url.host.lower(), url.port or default_port)


class ShopertiClient:
    """Async client for one store's Shoperti API. Use as ``async with ShopertiClient(...)``.

    Every method raises only :class:`~syncd.errors.ApiError` subclasses (the API
    failed, after retries where retrying makes sense) or
    :class:`~syncd.errors.WireError` (the API answered with a body of the wrong shape).
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
        on_response: ResponseHook | None = None,
        sleep: Sleep = asyncio.sleep,
        store: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        concurrency: int = DEFAULT_API_CONCURRENCY,
    ) -> None:
        self._base = _parse_api_url(api_url)
        self._origin = _Origin.of(self._base)
        self.api_url = str(self._base)
        _check_api_key(api_key)
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(timeout, connect_timeout, backoff_base, backoff_max, max_retry_after) < 0:
            raise ValueError("timeouts and delays must not be negative")
        self._api_key = api_key
        self.store = store
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_after = max_retry_after
        self._on_response = on_response
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not cryptography
        self._clock = clock
        # One window for the store's listings, so what a 429 taught outlives a
        # listing; one-object requests wait while a 429 keeps it closed.
        self._concurrency = concurrency
        self._gate: _Gate | None = None
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            # A redirect is an answer we did not ask for; never carry the token along one.
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
        )

    @classmethod
    def for_store(cls, store: StoreConfig, *, on_response: ResponseHook | None = None) -> Self:
        """The client of a configured store with API access: the one way the
        daemon and the commands make one."""
        if store.api_url is None or store.api_key is None:
            raise ConfigError(
                "SYNCD_API_URL", f"store {store.name!r} has no API URL and key configured"
            )
        return cls(
            store.api_url,
            store.api_key.reveal(),
            store=store.name,
            on_response=on_response,
            concurrency=store.api_concurrency,
        )

    def __repr__(self) -> str:
        store = f", store={self.store!r}" if self.store is not None else ""
        return f"{type(self).__name__}(api_url={self.api_url!r}{store})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- single objects ---------------------------------------------------------

    async def get_event(self, event_id: str | int) -> dict[str, Any]:
        """``GET /events/{id}``; :class:`ApiNotFound` when the API does not know the id."""
        return await self._get_one("events", event_id)

    async def get_order(self, order_id: str | int) -> dict[str, Any]:
        return await self._get_one("orders", order_id)

    async def get_customer(self, customer_id: str | int) -> dict[str, Any]:
        return await self._get_one("customers", customer_id)

    async def get_copy(self, resource: Literal["order", "customer"], object_id: str) -> Copy:
        """The current copy of one order or customer, and when it was read."""
        read_at = datetime.now(UTC)
        answer = await self._get_answer(f"{resource}s", object_id)  # type: ignore[arg-type]
        return Copy(_unwrap_single(f"{resource}s.get", answer.body), _read_time(answer, read_at))

    async def current_copies(
        self,
        wanted: Sequence[tuple[Literal["order", "customer"], str]],
        *,
        concurrency: int = 4,
    ) -> list[Copy | None]:
        """The current copy of each (resource, id), at most ``concurrency``
        requests at a time, in order; None where the API answers 404."""
        bound = asyncio.Semaphore(concurrency)

        async def fetch(resource: Literal["order", "customer"], object_id: str) -> Copy | None:
            async with bound:
                try:
                    return await self.get_copy(resource, object_id)
                except ApiNotFound:
                    return None

        return list(await asyncio.gather(*(fetch(r, i) for r, i in wanted)))

    async def _get_one(self, resource: Resource, object_id: str | int) -> dict[str, Any]:
        answer = await self._get_answer(resource, object_id)
        return _unwrap_single(f"{resource}.get", answer.body)

    def _shared_gate(self) -> _Gate:
        """The listings' gate if one is open, else one of the store's concurrency."""
        return self._gate if self._gate is not None else self._gate_for(self._concurrency)

    async def _get_answer(self, resource: Resource, object_id: str | int) -> _Answer:
        endpoint = f"{resource}.get"
        text_id = str(object_id)
        # "." and ".." would be resolved as path segments and fetch something else.
        if text_id in ("", ".", ".."):
            raise ApiNotFound(f"{endpoint}: {text_id!r} is not a valid id", status=None)
        url = self._base.copy_with(
            path=f"{self._base.path.rstrip('/')}/{resource}/{quote(text_id, safe='')}"
        )
        # Bounded by their callers (verification, refresh, audit), not by the
        # listings' window: they only wait while a 429 keeps the gate closed,
        # and a 429 of theirs closes it for everyone.
        return await self._answer(endpoint, url, gate=self._shared_gate(), slot=False)

    # -- listings ---------------------------------------------------------------

    def pages(
        self,
        resource: Resource,
        *,
        since: datetime | None,
        per_page: int = MAX_PER_PAGE,
        start: PageCursor | None = None,
        concurrency: int = 1,
        ahead: int | None = None,
    ) -> AsyncGenerator[Page, None]:
        """Iterate over a listing page by page, oldest first (docs/api.md §2).

        ``since`` maps to ``created_at_min`` for events and ``updated_at_min``
        for orders and customers; None lists everything. With ``start`` (a
        cursor saved from ``Page.next``) the listing resumes where it stopped:
        the cursor carries its own query, so ``since`` and ``per_page`` are
        then ignored. Arguments are checked here, before any request.

        With ``concurrency`` above 1 and an API that says how many pages there
        are (``total_pages``), the pages after the first are asked for by
        number, up to ``concurrency`` requests in flight, fewer while the API
        answers 429 (see :class:`_Gate`); they are still handed out in order,
        each with the ``next`` cursor of a sequential listing. At most
        ``ahead`` pages (default ``2 * concurrency``) are requested or held
        beyond the one the caller waits for. Without ``total_pages`` the
        listing follows ``links.next`` (or the page numbers) one page at a time.
        """
        if resource not in RESOURCES:
            raise ValueError(f"unknown resource {resource!r}; expected one of {RESOURCES}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, not {concurrency!r}")
        if ahead is not None and ahead < 1:
            raise ValueError(f"ahead must be at least 1, not {ahead!r}")
        if start is None:
            cursor = PageCursor(
                resource=resource,
                page=1,
                per_page=per_page,
                since=format_since(since) if since is not None else None,
            )
        elif start.resource != resource:
            raise ValueError(f"cursor is for {start.resource!r}, not {resource!r}")
        else:
            cursor = start
        return self._iter_pages(cursor, concurrency, ahead or 2 * concurrency)

    async def _iter_pages(
        self, cursor: PageCursor, concurrency: int = 1, ahead: int = 2
    ) -> AsyncGenerator[Page, None]:
        endpoint = f"{cursor.resource}.list"
        seen_urls: set[str] = set()
        previous_number: int | None = None
        next_cursor: PageCursor | None = cursor
        gate = self._gate_for(concurrency) if concurrency > 1 else None
        while next_cursor is not None:
            cursor = next_cursor
            page = await self._read_page(endpoint, cursor, seen_urls, gate=gate)
            if previous_number is not None and page.number <= previous_number:
                raise WireError(
                    f"{endpoint}: page {page.number} came after page {previous_number}; "
                    "the listing does not advance"
                )
            previous_number = page.number
            yield page
            next_cursor = page.next
            if gate is not None and page.total_pages is not None and next_cursor is not None:
                # The API says how many pages there are: ask for the rest by number.
                async for later in self._concurrent_pages(
                    endpoint, replace(next_cursor, url=None), page.total_pages, gate, ahead
                ):
                    yield later
                return

    def _gate_for(self, concurrency: int) -> _Gate:
        if self._gate is None or self._gate.limit != concurrency:
            self._gate = _Gate(concurrency, self._sleep)
        return self._gate

    async def _read_page(
        self,
        endpoint: str,
        cursor: PageCursor,
        seen_urls: set[str] | None = None,
        *,
        gate: _Gate | None = None,
    ) -> Page:
        """One page of a listing, with the cursor of the page after it."""
        if cursor.url is not None:
            url = self._checked_next_url(endpoint, cursor.url)
            # A server that links a page to itself (or back) would keep us here forever.
            if seen_urls is not None:
                if str(url) in seen_urls:
                    raise WireError(f"{endpoint}: links.next points back to a page already read")
                seen_urls.add(str(url))
            params: dict[str, str | int] | None = None
        else:
            url = self._base.copy_with(path=f"{self._base.path.rstrip('/')}/{cursor.resource}")
            params = cursor.query()
        answer = await self._answer(endpoint, url, params=params, gate=gate, priority=cursor.page)
        envelope = _parse_page(endpoint, answer.body, cursor)
        return Page(
            items=envelope.items,
            number=envelope.number,
            total_pages=envelope.total_pages,
            total=envelope.total,
            next=self._next_cursor(endpoint, cursor, url, envelope),
            read_at=_read_time(answer, answer.sent_at or datetime.now(UTC)),
        )

    async def _concurrent_pages(
        self, endpoint: str, first: PageCursor, total_pages: int, gate: _Gate, ahead: int
    ) -> AsyncGenerator[Page, None]:
        """Pages ``first.page`` … ``total_pages`` read concurrently, handed out in order.

        ``total_pages`` follows the largest count any answer gives (a listing
        may grow while it is read); an empty page ends the listing, like a
        sequential one, and pages asked for beyond it are dropped unread.
        Every request still in flight is cancelled when the iteration stops.
        """
        tasks: dict[int, asyncio.Task[Page]] = {}
        to_request = to_hand = first.page
        last = total_pages
        try:
            while to_hand <= last:
                # Bounded memory: requested or held pages never exceed ``ahead`` + 1.
                while to_request <= last and to_request - to_hand <= ahead:
                    tasks[to_request] = asyncio.create_task(
                        self._read_page(endpoint, replace(first, page=to_request), gate=gate),
                        name=f"syncd-{endpoint}-page-{to_request}",
                    )
                    to_request += 1
                page = await tasks.pop(to_hand)
                if page.total_pages is not None:
                    last = max(last, page.total_pages)
                # As a sequential listing would go on (an empty page ends it; an
                # earlier answer may have counted more pages than this one), but
                # always by number: that is how the pages after it are asked for.
                more = page.next is not None or (bool(page.items) and page.number < last)
                if more:
                    last = max(last, page.number + 1)  # a links.next past the count
                page = replace(page, next=replace(first, page=page.number + 1) if more else None)
                yield page
                if page.next is None:
                    return
                to_hand += 1
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    def _next_cursor(
        self, endpoint: str, cursor: PageCursor, url: httpx.URL, envelope: _Envelope
    ) -> PageCursor | None:
        """Where the listing goes on after this page (docs/api.md §2), or None at its end."""
        if not envelope.items:
            return None  # an empty page ends the listing, whatever the links say
        if envelope.next_link is not None:
            # Checked now, not when followed, so a refused link is never checkpointed.
            absolute = self._checked_next_url(endpoint, envelope.next_link, relative_to=url)
            return replace(cursor, page=envelope.number + 1, url=str(absolute))
        if envelope.total_pages is None or envelope.number < envelope.total_pages:
            # Without total_pages we go on until an empty page.
            return replace(cursor, page=envelope.number + 1, url=None)
        return None

    def _checked_next_url(
        self, endpoint: str, raw: str, *, relative_to: httpx.URL | None = None
    ) -> httpx.URL:
        try:
            url = (relative_to or self._base).join(raw)
        except httpx.InvalidURL as exc:
            raise WireError(f"{endpoint}: links.next is not a URL") from exc
        if _Origin.of(url) != self._origin:
            # The bearer token goes to the configured API and nowhere else.
            raise ApiError(
                f"{endpoint}: refused to follow links.next to {url.scheme}://{url.host}, "
                f"which is not the configured API ({self._origin.scheme}://{self._origin.host}); "
                "check the store's api_url"
            )
        return url

    # -- transport ----------------------------------------------------------------

    async def _answer(
        self,
        endpoint: str,
        url: httpx.URL,
        *,
        params: Mapping[str, str | int] | None = None,
        gate: _Gate | None = None,
        priority: int = 0,
        slot: bool = True,
    ) -> _Answer:
        """GET ``url`` with retries; a 2xx answer's decoded JSON and Date header.

        With a ``gate`` each attempt waits for a slot (lowest ``priority``
        first), a 429 narrows the gate and closes it for the ``Retry-After``,
        and a 2xx counts towards widening it again. Without a ``slot`` an
        attempt only waits while the gate is closed."""
        if _Origin.of(url) != self._origin:  # pragma: no cover - guarded by callers
            raise ApiError(f"{endpoint}: refusing to send the API key outside the API origin")
        headers = {"Authorization": f"Bearer {self._api_key}"}
        for attempt in range(1, self._max_attempts + 1):
            epoch = await _enter(gate, priority, slot)
            sent_at = datetime.now(UTC)
            try:
                result = await self._attempt(endpoint, url, params, headers)
                if gate is not None:
                    if isinstance(result, _Answer):
                        if slot:
                            gate.success()
                    elif result.status == 429:
                        gate.busy(epoch)
            finally:
                if gate is not None and slot:
                    gate.release()
            if isinstance(result, _Answer):
                return result._replace(sent_at=sent_at)
            if attempt == self._max_attempts:
                if gate is not None and result.status == 429:
                    gate.reopen()  # busy() closed it; nobody is left to wait here
                raise result.give_up(attempt) from result.cause
            delay = result.delay if result.delay is not None else self._backoff(attempt)
            log.warning(
                "api.retry",
                extra={
                    "endpoint": endpoint,
                    "status": result.status,
                    "reason": result.reason,
                    "attempt": attempt,
                    "max_attempts": self._max_attempts,
                    "delay": delay,
                },
            )
            if gate is not None and result.status == 429:
                await gate.pause(delay)  # nobody asks while the API says it is busy
            else:
                await self._sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def _attempt(
        self,
        endpoint: str,
        url: httpx.URL,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str],
    ) -> _Answer | _Transient:
        """One GET: the answer, a transient failure worth another attempt, or
        (raised) an error no retry can mend."""
        try:
            response = await self._http.get(url, params=params, headers=headers)
        except TRANSIENT_ERRORS as exc:
            self._report(endpoint, "error")
            reason = self._describe(exc)
            return _Transient(
                None,
                reason,
                None,
                exc,
                lambda attempts: ApiUnavailable(
                    f"Shoperti API at {self.api_url} unreachable for {endpoint} after "
                    f"{attempts} attempt(s) (last: {reason}); check the network and "
                    "the store's api_url, then try again",
                    status=None,
                ),
            )
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError) as exc:
            # Not transient (bad URL, local protocol error…): retrying cannot help.
            self._report(endpoint, "error")
            raise ApiError(
                f"{endpoint}: request to the Shoperti API failed ({self._describe(exc)})"
            ) from exc
        status = response.status_code
        self._report(endpoint, status)
        if 200 <= status < 300:
            body = _decode_json(endpoint, response.content)
            return _Answer(body, _http_date(response.headers.get("date")))
        refusal = self._refusal(endpoint, url, status)
        if refusal is not None:
            raise refusal
        delay = None
        if status in (429, 503):
            delay = self._retry_after(response.headers.get("Retry-After"))
        return _Transient(status, f"HTTP {status}", delay, None, self._exhausted(endpoint, status))

    def _refusal(self, endpoint: str, url: httpx.URL, status: int) -> ApiError | None:
        """The error a non-2xx answer ends in at once; None for 429 and 5xx
        (transient: another attempt may succeed)."""
        if status == 401:
            return ApiAuthError(
                f"Shoperti API at {self.api_url} refused the API key (401) for "
                f"{endpoint}{self._for_store()}: check SYNCD_API_KEY (or the store's "
                "api_key / api_key_file in SYNCD_CONFIG)",
                status=status,
            )
        if status == 404 and endpoint.endswith(".list"):
            # A listing always exists: the URL is wrong, not an id.
            return ApiNotFound(
                f"{endpoint}: the Shoperti API answered 404 for "
                f"{url.copy_with(query=None)}{self._for_store()}: check the store's "
                "api_url (SYNCD_API_URL, or api_url in SYNCD_CONFIG), which usually "
                "ends in /v1",
                status=status,
            )
        if status == 404:
            return ApiNotFound(
                f"{endpoint}: not found (404); unknown id or not this account's",
                status=status,
            )
        if 300 <= status < 400:
            return ApiError(
                f"{endpoint}: Shoperti API answered a redirect (HTTP {status}), which "
                "syncd does not follow; check the store's api_url",
                status=status,
            )
        if status != 429 and status < 500:
            return ApiError(f"{endpoint}: Shoperti API answered HTTP {status}", status=status)
        return None

    def _exhausted(self, endpoint: str, status: int) -> Callable[[int], ApiError]:
        """The error of a transient answer (429, 5xx) on the last attempt."""

        def give_up(attempts: int) -> ApiError:
            if status == 429:
                return ApiRateLimited(
                    f"Shoperti API kept answering 429 (too many requests) to {endpoint} "
                    f"after {attempts} attempt(s); try again later",
                    status=status,
                )
            return ApiUnavailable(
                f"Shoperti API at {self.api_url} unavailable for {endpoint} after "
                f"{attempts} attempt(s) (last: HTTP {status}); try again later",
                status=status,
            )

        return give_up

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""
        ceiling = min(self._backoff_max, self._backoff_base * 2.0 ** min(attempt - 1, 60))
        return self._rng.uniform(0.0, ceiling)

    def _retry_after(self, value: str | None) -> float | None:
        """Seconds to wait per a ``Retry-After`` header, capped; None when absent or unusable."""
        if value is None:
            return None
        value = value.strip()
        seconds: float
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = max(0.0, when.timestamp() - self._clock())
        if not math.isfinite(seconds) or seconds < 0:
            return None
        return min(seconds, self._max_retry_after)

    def _report(self, endpoint: str, outcome: int | str) -> None:
        if self._on_response is None:
            return
        try:
            self._on_response(endpoint, outcome)
        except Exception:
            # A metrics hook must not break a sync; say so loudly instead.
            log.exception("api.on_response_failed", extra={"endpoint": endpoint})

    def _describe(self, exc: BaseException) -> str:
        """A short, secret-free description of a transport exception.

        httpx messages do not include request headers, but redact the key anyway
        in case some layer below ever echoes it.
        """
        text = str(exc).replace(self._api_key, "[redacted]")
        if len(text) > MAX_REASON_CHARS:
            text = text[:MAX_REASON_CHARS] + "…"
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _for_store(self) -> str:
        return f" (store {self.store!r})" if self.store is not None else ""


# -- concurrency of a listing ------------------------------------------------------


async def _enter(gate: _Gate | None, priority: int, slot: bool) -> int:
    if gate is None:
        return 0
    return await gate.acquire(priority) if slot else await gate.wait_open()


class _Gate:
    """How many list requests of one store (one client) may be in flight:
    additive increase, multiplicative decrease, as TCP does for its window.

    The window starts at ``limit``. A 429 halves it (rounding up; once per
    window: the other requests that were already in flight when the API said
    so do not halve it again) and closes the gate while the answer's ``Retry-After``
    runs, so the API never sees a burst of refused requests; after
    ``grow_after * window`` successes in a row the window grows by one, up
    to ``limit``. Growing back to the window that was refused last takes a
    run eight times as long, twice as long again each time that window is
    refused once more (up to 64 times): an API that allows a fixed number is
    probed ever more rarely. Waiting requests go in ``priority`` order (page
    number), so the page the writer waits for is asked for first.
    """

    def __init__(self, limit: int, sleep: Sleep, *, grow_after: int = 4) -> None:
        self.limit = limit
        self.window = limit
        self.in_flight = 0
        self.smallest_window = limit
        self._sleep = sleep
        self._grow_after = grow_after
        self._epoch = 0  # bumped by each narrowing
        self._refused_at = limit + 1  # the window of the last 429
        self._probe_run = 8  # how much longer the run back to that window is
        self._successes = 0
        self._pausing = 0
        self._order = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._reopened = asyncio.Event()  # set while no 429 keeps the gate closed
        self._reopened.set()

    def _open(self) -> bool:
        return self._pausing == 0 and self.in_flight < self.window

    async def acquire(self, priority: int) -> int:
        """Wait for a slot; returns the window's epoch for :meth:`busy`."""
        if self._open() and not self._waiting:
            self.in_flight += 1
            return self._epoch
        while True:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._order += 1
            heapq.heappush(self._waiting, (priority, self._order, granted))
            try:
                await granted
            except asyncio.CancelledError:
                if granted.done() and not granted.cancelled():
                    self.release()  # granted just as we were cancelled: hand it on
                raise
            if self._pausing == 0:
                return self._epoch
            # A 429 closed the gate between the grant and now: wait for it to open.
            self.in_flight -= 1

    async def wait_open(self) -> int:
        """Wait while a 429 keeps the gate closed, taking no slot; returns
        the window's epoch for :meth:`busy`."""
        while self._pausing:
            await self._reopened.wait()
        return self._epoch

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting and self._open():
            _, _, granted = heapq.heappop(self._waiting)
            if granted.done():  # its task was cancelled while waiting
                continue
            self.in_flight += 1
            granted.set_result(None)

    def success(self) -> None:
        self._successes += 1
        run = self._grow_after * self.window
        if self.window + 1 == self._refused_at:
            run *= self._probe_run
        if self.window < self.limit and self._successes >= run:
            self.window += 1
            self._successes = 0
            log.info("api.concurrency", extra={"window": self.window, "reason": "grow"})
            self._wake()

    def busy(self, epoch: int) -> None:
        """The API answered 429 to a request sent in ``epoch``: the gate closes
        at once; the caller must then :meth:`pause`, which opens it again."""
        self._pausing += 1
        self._reopened.clear()
        self._successes = 0
        if epoch != self._epoch:
            return  # sent before the last narrowing, which already counted it
        self._epoch += 1
        refused_again = self.window == self._refused_at
        self._probe_run = min(64, self._probe_run * 2) if refused_again else 8
        self._refused_at = self.window
        self.window = max(1, -(-self.window // 2))  # halved, rounded up: 3 -> 2
        self.smallest_window = min(self.smallest_window, self.window)
        log.info(
            "api.concurrency",
            extra={"window": self.window, "was": self._refused_at, "reason": "429"},
        )

    async def pause(self, seconds: float) -> None:
        """Keep the gate closed by :meth:`busy` for ``seconds`` (the ``Retry-After``)."""
        try:
            await self._sleep(seconds)
        finally:
            self.reopen()

    def reopen(self) -> None:
        """End what one :meth:`busy` began (the gate opens once none is left)."""
        self._pausing -= 1
        if self._pausing == 0:
            self._reopened.set()
        self._wake()


# -- helpers (envelope only) -----------------------------------------------------


def _parse_api_url(api_url: str) -> httpx.URL:
    problem = api_url_problem(api_url)
    if problem is not None:
        raise ConfigError("SYNCD_API_URL", problem)
    url = httpx.URL(api_url.strip())
    return url.copy_with(path=url.path.rstrip("/"))


def _check_api_key(api_key: str) -> None:
    # The key can't be shown in the message; only say what is wrong with it.
    problem = api_key_problem(api_key)
    if problem is not None:
        raise ConfigError("SYNCD_API_KEY", problem)


def _decode_json(endpoint: str, content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        # The body stays out of the message: it may hold customer data.
        raise WireError(f"{endpoint}: the API answered with a body that is not JSON") from exc


def _unwrap_single(endpoint: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise WireError(f"{endpoint}: expected a JSON object, got {_json_type(body)}")
    data = body.get("data")
    if "id" not in body and isinstance(data, dict):
        return data
    return body


@dataclass(frozen=True, slots=True)
class _Envelope:
    items: list[dict[str, Any]]
    number: int
    total_pages: int | None
    total: int | None
    next_link: str | None


def _parse_page(endpoint: str, body: Any, cursor: PageCursor) -> _Envelope:
    if not isinstance(body, dict):
        raise WireError(f"{endpoint}: expected a JSON object, got {_json_type(body)}")
    items = body.get("data")
    if not isinstance(items, list):
        raise WireError(f"{endpoint}: 'data' must be a list, got {_json_type(items)}")
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise WireError(
                f"{endpoint}: item {position} of 'data' is {_json_type(item)}, not an object"
            )
    pagination = _pagination(endpoint, body)
    number = _page_number(endpoint, pagination, "current_page")
    if number is None:
        number = cursor.page
    elif cursor.url is None and number != cursor.page:
        # We asked for a page by number and got another one: going on would loop or skip.
        raise WireError(f"{endpoint}: asked for page {cursor.page}, got page {number}")
    return _Envelope(
        items=items,
        number=number,
        total_pages=_page_number(endpoint, pagination, "total_pages"),
        total=_optional_count(pagination.get("total")),
        next_link=_next_link(endpoint, pagination),
    )


def _pagination(endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("meta")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise WireError(f"{endpoint}: 'meta' must be an object, got {_json_type(meta)}")
    pagination = meta.get("pagination")
    if pagination is None:
        return {}
    if not isinstance(pagination, dict):
        raise WireError(
            f"{endpoint}: 'meta.pagination' must be an object, got {_json_type(pagination)}"
        )
    return pagination


def _page_number(endpoint: str, pagination: dict[str, Any], key: str) -> int | None:
    """A page number the listing depends on: absent is fine, wrong is an error."""
    value = pagination.get(key)
    if value is None:
        return None
    number = _optional_count(value)
    if number is None or number < 1:
        # A wrong page number would make us skip or repeat pages silently.
        raise WireError(f"{endpoint}: meta.pagination.{key} is not a page number")
    return number


def _optional_count(value: Any) -> int | None:
    """An integer that may come as a number or a digit string; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _next_link(endpoint: str, pagination: dict[str, Any]) -> str | None:
    links = pagination.get("links")
    if links is None or links == []:  # some serializers render an empty map as a list
        return None
    if not isinstance(links, dict):
        raise WireError(f"{endpoint}: 'meta.pagination.links' must be an object")
    link = links.get("next")
    if link is None or link == "":
        return None
    if not isinstance(link, str):
        raise WireError(f"{endpoint}: links.next must be a URL string, got {_json_type(link)}")
    return link


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
