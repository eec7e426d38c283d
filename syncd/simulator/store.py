"""``SimulatedStore``: the world, its API on loopback, and its webhook sender together."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import orjson
import uvicorn

from syncd.simulator.api import ApiContext, create_app
from syncd.simulator.faults import Faults
from syncd.simulator.webhooks import PLATFORM_RETRIES, DeliveryStats, WebhookSender
from syncd.simulator.world import JSON, Quirks, World

T = TypeVar("T")

DEFAULT_RETENTION_SECONDS = 30 * 86400


@dataclass(frozen=True, slots=True)
class Truth:
    """The store's final state: the latest JSON of every resource, as the API serves it.

    Deleted resources stay in ``orders`` / ``customers`` as tombstones carrying
    ``"deleted": true`` (their ``updated_at`` is the deletion time);
    ``deleted_orders`` / ``deleted_customers`` list their ids for convenience.
    """

    orders: dict[str, JSON]
    customers: dict[str, JSON]
    deleted_orders: frozenset[str]
    deleted_customers: frozenset[str]

    def to_json(self) -> JSON:
        return {
            "orders": self.orders,
            "customers": self.customers,
            "deleted_orders": sorted(self.deleted_orders),
            "deleted_customers": sorted(self.deleted_customers),
        }


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner (the CLI, or the test)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listening_socket(host: str, port: int) -> socket.socket:
    """Bound here rather than by uvicorn, so a busy port is an ``OSError`` for the caller
    (uvicorn would ``sys.exit``). The protocol must be spelled out: asyncio sets
    TCP_NODELAY only on sockets whose ``proto`` is TCP, and without it every answer
    waits ~40 ms for a delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class SimulatedStore:
    """A stand-in Shoperti store: API (docs/api.md §2) on loopback, selling, webhooks.

    ``time_scale`` shrinks the platform's hour: retries come every
    ``3600 * time_scale`` real seconds. ``clock`` (epoch seconds; default
    ``time.time``) stamps every change and judges retention and ``*_min`` filters;
    pass a fixed one to make runs byte-for-byte repeatable. Everything else that
    happens comes from ``seed``.

    Use as ``async with SimulatedStore(...) as store:``, or ``start_in_thread()`` /
    ``stop_thread()`` from synchronous code, with ``run(coroutine)`` to call the async
    methods on the store's loop.
    """

    def __init__(
        self,
        seed: int = 0,
        api_key: str = "sk_test",
        webhook_url: str | None = None,
        faults: Faults | None = None,
        time_scale: float = 1 / 3600,
        retention_seconds: int = DEFAULT_RETENTION_SECONDS,
        per_page_max: int = 100,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        quirks: Quirks | None = None,
        clock: Callable[[], float] | None = None,
        delivery_concurrency: int = 16,
        delivery_timeout: float = 10.0,
        max_retries: int = PLATFORM_RETRIES,
    ) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if per_page_max < 1:
            raise ValueError("per_page_max must be 1 or more")
        if delivery_concurrency < 1:
            raise ValueError("delivery_concurrency must be 1 or more")
        self.seed = seed
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.faults = faults or Faults()
        self.time_scale = time_scale
        self.retention_seconds = retention_seconds
        self.clock: Callable[[], float] = clock or time.time
        self.world = World(seed, quirks)
        self._host, self._port = host, port
        self._delivery_concurrency = delivery_concurrency
        self._delivery_timeout = delivery_timeout
        self._max_retries = max_retries
        self._api = ApiContext(
            world=self.world,
            api_key=api_key,
            faults=self.faults,
            clock=self.clock,
            retention_seconds=retention_seconds,
            per_page_max=per_page_max,
            rng=random.Random(f"syncd-simulator/{seed}/api"),
        )
        self._server: _QuietServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self._sender: WebhookSender | None = None
        self._sold_event_ids: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- life cycle ---------------------------------------------------------------

    @property
    def retry_interval(self) -> float:
        """Real seconds between two delivery attempts of an event (the platform's hour)."""
        return 3600 * self.time_scale

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` once started."""
        if self._server is None:
            raise RuntimeError("the simulated store is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/v1"

    def set_api_faults(self, faults: Faults) -> None:
        """Change the API's fault knobs while it runs (an outage starts or ends).
        Webhook delivery faults stay as they were given at construction."""
        self.faults = faults
        self._api.faults = faults

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the simulated store is already started")
        sock = _listening_socket(self._host, self._port)
        config = uvicorn.Config(
            create_app(self._api),
            host=self._host,
            port=self._port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            date_header=False,  # the API sends the store's (time-scaled) clock itself
        )
        server = _QuietServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="simulator-api")
        while not server.started:
            if task.done():
                sock.close()
                task.result()  # raises what went wrong
                raise RuntimeError("the simulated store's API server stopped at start-up")
            await asyncio.sleep(0.005)
        self._port = sock.getsockname()[1]
        self._server, self._server_task = server, task
        self._loop = asyncio.get_running_loop()
        if self.webhook_url:
            self._sender = WebhookSender(
                self.webhook_url,
                self.faults,
                self.seed,
                retry_interval=self.retry_interval,
                max_retries=self._max_retries,
                concurrency=self._delivery_concurrency,
                timeout=self._delivery_timeout,
            )
            await self._sender.start()

    async def stop(self) -> None:
        """Stop delivering (deliveries in flight are abandoned) and serving."""
        if self._sender is not None:
            await self._sender.close()
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            await self._server_task
            self._server, self._server_task = None, None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- running the store ----------------------------------------------------------

    async def sell(self, orders: int, customers: int | None = None, rate: float = 0.0) -> int:
        """Create ``orders`` orders and ``customers`` customers (default: 40 % as many as
        orders) and change them until their lives are over, each change emitting an
        event whose webhook is scheduled. ``rate`` caps events per second (0: as fast
        as possible). Returns the number of events emitted, once all are made;
        deliveries may still be in flight (see ``wait_deliveries``)."""
        if self.webhook_url and self._sender is None:
            raise RuntimeError("start() the store before selling: deliveries need it")
        loop = asyncio.get_running_loop()
        begun = loop.time()
        emitted = steps = 0
        try:
            for batch in self.world.sell(orders, customers, self.clock):
                for event_id, body in batch:
                    self._sold_event_ids.append(event_id)
                    if self._sender is not None:
                        self._sender.submit(event_id, body)
                emitted += len(batch)
                steps += 1
                if rate > 0:
                    ahead = begun + emitted / rate - loop.time()
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                elif steps % 50 == 0:
                    await asyncio.sleep(0)  # let the API and the deliveries breathe
        finally:
            if self._sender is not None:
                self._sender.flush()
        return emitted

    async def wait_deliveries(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109 (the API)
        """Until every scheduled delivery has succeeded or been given up for good;
        ``TimeoutError`` after ``timeout`` seconds."""
        if self._sender is not None:
            await self._sender.wait_idle(timeout)

    def generate_history(self, orders: int, days: float = 365, customers: int | None = None) -> int:
        """Bulk past: orders and customers with changes spread over the last ``days``,
        without webhooks. Only changes within the retention window get (listable)
        events. Call it before ``sell``. Returns the number of events emitted."""
        return self._on_loop(
            lambda: self.world.generate_history(
                orders, days, int(self.clock()), self.retention_seconds, customers
            )
        )

    # --- what happened --------------------------------------------------------------

    def truth(self) -> Truth:
        """The final state (fresh dicts, yours to change)."""

        def collect() -> Truth:
            world = self.world
            return Truth(
                orders={key: orjson.loads(blob) for key, blob in world.order_blobs.items()},
                customers={key: orjson.loads(blob) for key, blob in world.customer_blobs.items()},
                deleted_orders=frozenset(world.deleted_orders),
                deleted_customers=frozenset(world.deleted_customers),
            )

        return self._on_loop(collect)

    @property
    def events(self) -> list[JSON]:
        """Every event emitted, in creation order (fresh dicts on each call)."""
        return self._on_loop(lambda: [orjson.loads(blob) for blob in self.world.event_blobs])

    @property
    def sold_event_ids(self) -> list[str]:
        """Events emitted by ``sell`` (those with webhooks), in creation order."""
        return self._on_loop(lambda: list(self._sold_event_ids))

    @property
    def delivery_stats(self) -> DeliveryStats:
        if self._sender is None:
            return DeliveryStats()
        sender = self._sender
        return self._on_loop(lambda: sender.stats)

    @property
    def delivered_event_ids(self) -> list[str]:
        """Events that reached the webhook with a 2xx at least once, in creation order."""
        return self._on_loop(self._delivered)

    @property
    def lost_event_ids(self) -> list[str]:
        """Events emitted by ``sell`` that never got a 2xx (dropped, given up, still in
        flight, or no webhook URL), in creation order. History events had no webhooks
        and are not counted."""

        def lost() -> list[str]:
            delivered = self._sender.delivered if self._sender is not None else {}
            return [event_id for event_id in self._sold_event_ids if event_id not in delivered]

        return self._on_loop(lost)

    @property
    def api_answers(self) -> dict[int, int]:
        """API answers by status code."""
        return self._on_loop(lambda: dict(sorted(self._api.answers.items())))

    @property
    def api_busy(self) -> int:
        """API requests refused with 429 because ``Faults.api_max_concurrent`` were in flight."""
        return self._on_loop(lambda: self._api.busy)

    @property
    def api_in_flight(self) -> int:
        """API requests being answered right now."""
        return self._on_loop(lambda: self._api.in_flight)

    @property
    def api_peak_in_flight(self) -> int:
        """The most API requests answered at once so far."""
        return self._on_loop(lambda: self._api.peak_in_flight)

    def _delivered(self) -> list[str]:
        if self._sender is None:
            return []
        delivered = self._sender.delivered
        return [event_id for event_id in self._sold_event_ids if event_id in delivered]

    # --- from synchronous code --------------------------------------------------------

    def start_in_thread(self, timeout: float = 10.0) -> str:
        """Start on an event loop in a background thread; returns ``api_url``."""
        if self._thread is not None:
            raise RuntimeError("the simulated store already runs in a thread")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as problem:  # handed to the starting thread
                failure.append(problem)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="syncd-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("the simulated store did not start in time")
        if failure:
            self._thread = None
            raise failure[0]
        return self.api_url

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coroutine`` (e.g. ``store.sell(orders=10)``) on the store's thread."""
        if self._thread is None or self._loop is None:
            coroutine.close()
            raise RuntimeError("start_in_thread() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop_thread(self, timeout: float = 10.0) -> None:
        if self._thread is None or self._loop is None:
            return
        self.run(self.stop(), timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def _on_loop(self, read: Callable[[], T]) -> T:
        """Read or change state on the store's thread when it runs in one."""
        thread = self._thread
        if thread is None or threading.current_thread() is thread or not thread.is_alive():
            return read()

        async def call() -> T:
            return read()

        return self.run(call())
