"""The webhook route: check, parse, commit to the inbox, answer.

It answers 200 only once the event is committed (a duplicate too), and
otherwise says exactly why not (docs/api.md §3). The content type is not trusted;
the body is read in chunks and refused past ``SYNCD_MAX_BODY_BYTES``; the
rest is read and dropped (up to a bound) so the sender can read the 413.
The route never applies anything: it hands over to the worker by waking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from syncd.config import Settings, StoreConfig
from syncd.deadlines import DeadlineSweep
from syncd.errors import DatabaseUnavailable, WireError
from syncd.inbox import GroupCommitter, event_row
from syncd.ops.metrics import Metrics
from syncd.ops.request_id import header
from syncd.shoperti import wire
from syncd.vocabulary import EventSource

log = logging.getLogger("syncd.receiver")


class BodyTooLarge(Exception):
    pass


class OrjsonResponse(JSONResponse):
    """The same compact JSON as Starlette's, rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error(status: int, reason: str) -> JSONResponse:
    return OrjsonResponse({"error": reason}, status_code=status)


def query_token(query_string: bytes) -> str:
    """The ``token`` parameter of a raw query string, as Starlette's
    ``query_params`` would read it (the last one wins), without building the
    whole mapping for every webhook."""
    token = ""
    for part in query_string.split(b"&"):
        name, _, value = part.partition(b"=")
        if name == b"token":
            token = unquote_plus(value.decode("latin-1"))
    return token


# A body over the limit is still read (and dropped) up to this many times the
# limit, so that a sender that writes its whole body before it reads the answer
# (no `Expect: 100-continue`: urllib and many others) reads the 413 instead of
# a connection reset. Past it, or after a second without data, the answer goes
# out and the connection is closed under whatever is left.
DRAIN_FACTOR = 16
DRAIN_IDLE_SECONDS = 1.0


@dataclass(eq=False)
class _Reading:
    task: asyncio.Task[Any]
    done: bool = False
    expired: bool = False

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()


class BodyDeadlines:
    """Bounds the time each request may take to send its body, with one
    :class:`~syncd.deadlines.DeadlineSweep` for all of them: a read still
    going at its deadline is cancelled and raises TimeoutError, as under
    :func:`asyncio.timeout`."""

    def __init__(self, within: float) -> None:
        self.within = within
        self.sweep = DeadlineSweep(within)

    @contextlib.contextmanager
    def bound(self) -> Iterator[float]:
        """Yields the deadline (the loop's clock) of the read in the block."""
        task = asyncio.current_task()
        assert task is not None
        reading = _Reading(task)
        deadline = self.sweep.watch(lambda: reading.done, reading.expire)
        try:
            yield deadline
        except asyncio.CancelledError:
            if reading.expired and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            reading.done = True


async def read_limited(request: Request, limit: int, deadlines: BodyDeadlines) -> bytes:
    """The body, read within ``deadlines.within`` seconds (else TimeoutError),
    or BodyTooLarge past ``limit`` bytes once the rest has been drained
    (within the same time, up to DRAIN_FACTOR times the limit)."""
    loop = asyncio.get_running_loop()
    bound = limit * DRAIN_FACTOR
    declared = header(request.scope, b"content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    if too_large and int(declared or 0) > bound:
        raise BodyTooLarge  # not worth reading
    chunks: list[bytes] = []
    size, more = 0, True
    with deadlines.bound() as deadline:
        while more and not too_large:
            message = await request.receive()
            if message["type"] != "http.request":
                raise ClientDisconnect
            chunk: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            size += len(chunk)
            too_large = size > limit
            chunks.append(chunk)
    if not too_large:
        return b"".join(chunks)
    chunks.clear()
    while more and size <= bound:
        wait = min(DRAIN_IDLE_SECONDS, deadline - loop.time())
        if wait <= 0:
            break
        try:
            message = await asyncio.wait_for(request.receive(), wait)
        except TimeoutError:
            break
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        more = bool(message.get("more_body", False))
    raise BodyTooLarge


WEBHOOK_PATH = "/webhooks/shoperti"


def webhook_store(path: str) -> str | None:
    """For a webhook's path, the store it names ("" for the default path);
    None for any other path. The same paths the routes declare
    (``/webhooks/shoperti`` and ``/webhooks/shoperti/{store}``)."""
    if path == WEBHOOK_PATH:
        return ""
    prefix, slash, store = path.partition(WEBHOOK_PATH + "/")
    if prefix or not slash or not store or "/" in store:
        return None
    return store


def _reason_of(response: Response) -> str:
    """The reason an error answer gives its sender (never payload data)."""
    try:
        return str(orjson.loads(bytes(response.body)).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


class WebhookEndpoint:
    def __init__(
        self,
        settings: Settings,
        committer: GroupCommitter,
        metrics: Metrics,
        on_commit: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.committer = committer
        self.metrics = metrics
        self.on_commit = on_commit
        self._answered: dict[tuple[str, int], Any] = {}
        self._deadlines = BodyDeadlines(settings.body_timeout)

    async def handle(self, request: Request) -> Response:
        store_name = request.path_params.get("store", self.settings.default_store)
        store = self.settings.stores.get(store_name)
        label = store_name if store is not None else "unknown"
        response = await self._handle(request, store)
        key = (label, response.status_code)
        counter = self._answered.get(key)
        if counter is None:  # a handful of (store, status) pairs: looked up once each
            counter = self._answered[key] = self.metrics.webhooks.labels(label, str(key[1]))
        counter.inc()
        # A store at full tilt sends thousands a minute: successes are DEBUG,
        # refusals WARNING (they mean a misconfigured sender or an outage).
        level = logging.DEBUG if response.status_code < 300 else logging.WARNING
        if log.isEnabledFor(level):
            facts: dict[str, Any] = {"store": label, "status": response.status_code}
            if response.status_code >= 400:
                facts["reason"] = _reason_of(response)
            log.log(level, "webhook.answered", extra=facts)
        return response

    async def _handle(self, request: Request, store: StoreConfig | None) -> Response:
        if store is None:
            return error(404, "unknown store")
        if store.webhook_secret is not None:
            token = query_token(request.scope["query_string"])
            expected = store.webhook_secret.reveal()
            if not hmac.compare_digest(token.encode(), expected.encode()):
                return error(401, "missing or wrong token")
        try:
            body = await read_limited(request, self.settings.max_body_bytes, self._deadlines)
        except TimeoutError:
            # A client that stalls or trickles its body must not hold a task forever.
            return error(408, f"body not received within {self.settings.body_timeout:g} s")
        except BodyTooLarge:
            return error(413, f"body larger than {self.settings.max_body_bytes} bytes")
        except ClientDisconnect:
            return error(400, "client disconnected before the body was read")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error(400, "body is not JSON")
        if b"\\u0000" in body:  # JSON's spelling of NUL; rare, so checked on the raw bytes
            payload = wire.scrub_nul(payload)
        if body.count(b"[") + body.count(b"{") > wire.MAX_JSON_DEPTH:  # else it cannot be that deep
            unstorable = wire.unstorable(payload)
            if unstorable is not None:  # a retry would never store it: not a 503
                return error(400, unstorable)
        try:
            event = wire.parse_envelope(payload)
        except WireError as exc:
            return error(400, str(exc))
        # Verified only by the API, never by the poster; 'off' applies it as is.
        row = event_row(store.name, event, source=EventSource.WEBHOOK, verified=False)
        try:
            await self.committer.put(row)
        except DatabaseUnavailable as exc:
            return error(503, f"event not stored, retry later: {exc}")
        self.on_commit()
        return OrjsonResponse({"status": "ok", "id": event.id})
