"""The simulated store's HTTP API (docs/api.md §2), served from the ``World`` in memory.

Routes, all under ``/v1`` and all needing ``Authorization: Bearer <api_key>``:
``GET /events``, ``/events/{id}``, ``/orders``, ``/orders/{id}``, ``/customers``,
``/customers/{id}``.

Behaviour worth knowing when writing a client against it:

- Lists are oldest first: events by creation, orders and customers by
  ``(updated_at, id)``. Pages are numbered; a resource changed while a client pages
  moves to the end of its list, so page-number paging over a changing list can skip
  or repeat items (a known hazard of the real platform too). Events only ever get
  appended, but the oldest fall out of the retention window as time passes, which
  shifts pages too.
- ``created_at_min`` / ``updated_at_min`` are inclusive; naive values mean UTC.
- Events older than the retention window are neither listed nor fetchable (404).
- Lists include deleted orders and customers as tombstones (``"deleted": true``,
  ``updated_at`` = deletion time), so a resource sync learns about deletions.
  ``GET /orders/{id}`` of a deleted one answers 404 unless the ``tombstone`` quirk
  is chosen.
- Faults (429 with ``Retry-After``, 500/502/503, slow answers) hit before auth, the
  way a gateway in front of the platform would. ``api_latency`` delays every
  answer; with ``api_max_concurrent`` a request that arrives while that many are
  in flight is refused at once with 429 and ``Retry-After`` (counted in ``busy``).
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncd.simulator.faults import Faults
from syncd.simulator.world import World, parse_timestamp

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class ApiContext:
    """What the API reads; the store owns and may swap the parts."""

    world: World
    api_key: str
    faults: Faults
    clock: Callable[[], float]
    retention_seconds: int
    per_page_max: int
    rng: random.Random
    answers: Counter[int] = field(default_factory=Counter)
    """API answers by status code."""
    in_flight: int = 0
    """Requests being answered now (for ``Faults.api_max_concurrent``)."""
    busy: int = 0
    """Requests refused with 429 because ``api_max_concurrent`` were in flight."""
    peak_in_flight: int = 0
    """The most requests answered at once so far."""


class _ClientError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _error(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return _json(status, orjson.dumps({"error": error, "message": message}), headers)


def create_app(ctx: ApiContext) -> Starlette:
    def guarded(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            response = await _answer(ctx, handler, request)
            ctx.answers[response.status_code] += 1
            # The store's own clock, as a real API's Date header gives it.
            response.headers["date"] = formatdate(ctx.clock(), usegmt=True)
            return response

        return endpoint

    async def list_events(request: Request) -> Response:
        world = ctx.world
        page, per_page = _page_params(request, ctx.per_page_max)
        floor = int(ctx.clock()) - ctx.retention_seconds
        since = _since(request, "created_at_min")
        start = bisect.bisect_left(world.event_times, max(floor, since))
        end = len(world.event_times)
        first = start + (page - 1) * per_page
        blobs = world.event_blobs[first : min(first + per_page, end)] if first < end else []
        return _page(request, ctx, blobs, end - start, page, per_page)

    async def get_event(request: Request) -> Response:
        world = ctx.world
        index = world.event_index.get(request.path_params["id"])
        floor = int(ctx.clock()) - ctx.retention_seconds
        if index is None or world.event_times[index] < floor:
            return _error(404, "not_found", "No such event.")
        return _single(request, ctx, world.event_blobs[index])

    def resource_routes(
        name: str,
        sorted_keys: Callable[[], list[tuple[int, str]]],
        blobs: dict[str, bytes],
        deleted: dict[str, None],
    ) -> list[Route]:
        async def list_resources(request: Request) -> Response:
            page, per_page = _page_params(request, ctx.per_page_max)
            keys = sorted_keys()
            start = bisect.bisect_left(keys, (_since(request, "updated_at_min"), ""))
            first = start + (page - 1) * per_page
            chunk = keys[first : first + per_page] if first < len(keys) else []
            items = [blobs[key] for _, key in chunk]
            return _page(request, ctx, items, len(keys) - start, page, per_page)

        async def get_resource(request: Request) -> Response:
            resource_id = request.path_params["id"]
            blob = blobs.get(resource_id)
            if blob is None or (resource_id in deleted and ctx.world.quirks.deleted_by_id == "404"):
                return _error(404, "not_found", f"No such {name}.")
            return _single(request, ctx, blob)

        return [
            Route(f"/v1/{name}s", guarded(list_resources), methods=["GET"]),
            Route(f"/v1/{name}s/{{id}}", guarded(get_resource), methods=["GET"]),
        ]

    async def not_found(request: Request) -> Response:
        return _error(404, "not_found", "No such route.")

    world = ctx.world
    routes = [
        Route("/v1/events", guarded(list_events), methods=["GET"]),
        Route("/v1/events/{id}", guarded(get_event), methods=["GET"]),
        *resource_routes("order", world.sorted_orders, world.order_blobs, world.deleted_orders),
        *resource_routes(
            "customer", world.sorted_customers, world.customer_blobs, world.deleted_customers
        ),
        Route("/{path:path}", guarded(not_found)),
    ]
    return Starlette(routes=routes)


async def _answer(ctx: ApiContext, handler: Handler, request: Request) -> Response:
    faults = ctx.faults
    if faults.api_max_concurrent and ctx.in_flight >= faults.api_max_concurrent:
        ctx.busy += 1
        if faults.api_latency:
            await asyncio.sleep(faults.api_latency)
        return _error(
            429,
            "rate_limited",
            "Too many requests in flight.",
            {"Retry-After": str(faults.api_retry_after)},
        )
    ctx.in_flight += 1
    ctx.peak_in_flight = max(ctx.peak_in_flight, ctx.in_flight)
    try:
        if faults.api_latency:
            await asyncio.sleep(faults.api_latency)
        return await _faulty_answer(ctx, handler, request)
    finally:
        ctx.in_flight -= 1


async def _faulty_answer(ctx: ApiContext, handler: Handler, request: Request) -> Response:
    faults = ctx.faults
    roll = ctx.rng.random()
    if roll < faults.api_429_rate:
        return _error(
            429, "rate_limited", "Too many requests.", {"Retry-After": str(faults.api_retry_after)}
        )
    if roll < faults.api_429_rate + faults.api_5xx_rate:
        status = ctx.rng.choice((500, 502, 503))
        return _error(status, "server_error", "The platform had a problem; try again.")
    if faults.api_slow_rate and ctx.rng.random() < faults.api_slow_rate:
        await asyncio.sleep(faults.api_slow_seconds)
    if not _authorized(request, ctx.api_key):
        return _error(
            401, "unauthorized", "Missing or invalid API key.", {"WWW-Authenticate": "Bearer"}
        )
    try:
        return await handler(request)
    except _ClientError as problem:
        return _error(problem.status, problem.error, problem.message)


def _authorized(request: Request, api_key: str) -> bool:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    )


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _ClientError(400, "invalid_parameter", f"{name} must be an integer.") from None


def _page_params(request: Request, per_page_max: int) -> tuple[int, int]:
    page = _int_param(request, "page", 1)
    per_page = _int_param(request, "per_page", min(100, per_page_max))
    if page < 1:
        raise _ClientError(400, "invalid_parameter", "page must be 1 or more.")
    if not 1 <= per_page <= per_page_max:
        raise _ClientError(400, "invalid_parameter", f"per_page must be within 1..{per_page_max}.")
    return page, per_page


def _since(request: Request, name: str) -> int:
    """The inclusive lower bound as whole epoch seconds (items carry whole seconds)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return -(2**62)
    try:
        return math.ceil(parse_timestamp(raw))
    except (ValueError, OverflowError):
        raise _ClientError(400, "invalid_parameter", f"{name} must be an ISO 8601 time.") from None


def _page(
    request: Request, ctx: ApiContext, blobs: list[bytes], total: int, page: int, per_page: int
) -> Response:
    total_pages = max(1, math.ceil(total / per_page))
    pagination: dict[str, object] = {
        "total": total,
        "count": len(blobs),
        "per_page": per_page,
        "current_page": page,
        "total_pages": total_pages,
    }
    if not ctx.world.quirks.omit_links:
        links: dict[str, str] = {}
        if page < total_pages:
            links["next"] = str(request.url.include_query_params(page=page + 1))
        pagination["links"] = links
    meta = orjson.dumps({"pagination": pagination})
    return _json(200, b'{"data":[' + b",".join(blobs) + b'],"meta":' + meta + b"}")


def _single(request: Request, ctx: ApiContext, blob: bytes) -> Response:
    style = ctx.world.quirks.single_objects
    if style == "wrapped" or (style == "random" and ctx.rng.random() < 0.5):
        return _json(200, b'{"data":' + blob + b"}")
    return _json(200, blob)
