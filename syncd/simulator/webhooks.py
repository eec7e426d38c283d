"""Webhook delivery the way the platform does it (``seed/shoperti-webhooks.md``).

- Each event is POSTed as JSON to the webhook URL. Only a 2xx answer counts as
  received; a 3xx (redirects are never followed), any other status, a connection
  error or a timeout is a failure.
- A failed delivery is retried once an hour (``retry_interval`` real seconds, i.e.
  3600 * time_scale) for two days (48 retries), then given up for good.
- Faults (``Faults``): a dropped event is never attempted; a duplicated one is sent
  as two or three independent copies (each with its own retries); first deliveries
  are shuffled within windows of ``reorder_window`` events; each first delivery may
  wait up to ``delay_max`` seconds.

Fault decisions come from a generator seeded by the store's seed and are drawn in
event order, so which events are dropped or duplicated repeats with the seed. What
the receiver answers, and so what gets retried, is up to the receiver.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass, field

import httpx

from syncd.simulator.faults import Faults

log = logging.getLogger(__name__)

PLATFORM_RETRIES = 48
"""Once an hour for two days."""
USER_AGENT = "Shoperti-Webhooks/1.0 (syncd simulator)"


@dataclass(slots=True)
class DeliveryStats:
    """What the sender did so far: a snapshot; id lists are in the order things happened."""

    scheduled: int = 0
    """Events handed to the sender, dropped ones included."""
    attempted: int = 0
    """HTTP attempts: first tries, retries and duplicate copies."""
    delivered: int = 0
    """2xx answers, duplicate copies included."""
    delivered_events: int = 0
    """Distinct events answered 2xx at least once."""
    dropped_for_good: list[str] = field(default_factory=list)
    """Events lost on purpose (``drop_rate``): never attempted."""
    duplicated: int = 0
    """Extra copies sent because of ``duplicate_rate``."""
    duplicated_event_ids: list[str] = field(default_factory=list)
    retried: int = 0
    """Retries made after failed attempts."""
    gave_up: list[str] = field(default_factory=list)
    """Events whose every copy failed through all retries."""
    answers: dict[int, int] = field(default_factory=dict)
    """Answers by HTTP status."""
    transport_errors: int = 0
    """Attempts that got no answer: connection refused or reset, timeout."""
    in_flight: int = 0
    """Copies not yet delivered nor given up."""


@dataclass(slots=True, eq=False)
class _Copy:
    event_id: str
    body: bytes
    retries: int = 0


class WebhookSender:
    """Delivers event bodies to one URL with bounded concurrency. Lives on one loop."""

    def __init__(
        self,
        url: str,
        faults: Faults,
        seed: int,
        *,
        retry_interval: float,
        max_retries: int = PLATFORM_RETRIES,
        concurrency: int = 16,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self._faults = faults
        self._rng = random.Random(f"syncd-simulator/{seed}/webhooks")
        self._retry_interval = retry_interval
        self._max_retries = max_retries
        self._concurrency = concurrency
        self._timeout = timeout
        self._stats = DeliveryStats()
        self._answers: Counter[int] = Counter()
        self._copies_left: dict[str, int] = {}
        self.delivered: dict[str, None] = {}  # event ids, an ordered set
        self._window: list[_Copy] = []
        self._window_timer: asyncio.TimerHandle | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._queue: asyncio.Queue[_Copy] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    @property
    def stats(self) -> DeliveryStats:
        stats = self._stats
        return DeliveryStats(
            scheduled=stats.scheduled,
            attempted=stats.attempted,
            delivered=stats.delivered,
            delivered_events=len(self.delivered),
            dropped_for_good=list(stats.dropped_for_good),
            duplicated=stats.duplicated,
            duplicated_event_ids=list(stats.duplicated_event_ids),
            retried=stats.retried,
            gave_up=list(stats.gave_up),
            answers=dict(sorted(self._answers.items())),
            transport_errors=stats.transport_errors,
            in_flight=stats.in_flight,
        )

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=self._timeout,
            limits=httpx.Limits(
                max_connections=self._concurrency, max_keepalive_connections=self._concurrency
            ),
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )
        self._workers = [
            asyncio.create_task(self._work(), name=f"webhook-sender-{n}")
            for n in range(self._concurrency)
        ]

    async def close(self) -> None:
        """Stop now; copies still in flight are abandoned (they count as not delivered)."""
        for timer in (*self._timers, self._window_timer):
            if timer is not None:
                timer.cancel()
        self._timers.clear()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def submit(self, event_id: str, body: bytes) -> None:
        """Schedule an event's delivery (with the faults applied)."""
        faults, rng, stats = self._faults, self._rng, self._stats
        stats.scheduled += 1
        if faults.drop_rate and rng.random() < faults.drop_rate:
            stats.dropped_for_good.append(event_id)
            return
        copies = 1
        if faults.duplicate_rate and rng.random() < faults.duplicate_rate:
            copies += 1 if rng.random() < 0.8 else 2
            stats.duplicated += copies - 1
            stats.duplicated_event_ids.append(event_id)
        self._copies_left[event_id] = copies
        stats.in_flight += copies
        self._idle.clear()
        first = _Copy(event_id, body)
        extra_delay = max(self._retry_interval, faults.delay_max, 0.01)
        for _ in range(copies - 1):
            self._later(rng.uniform(0.0, extra_delay) + self._first_delay(), _Copy(event_id, body))
        if faults.reorder_window > 1:
            self._window.append(first)
            if len(self._window) >= faults.reorder_window:
                self.flush()
            elif self._window_timer is None:
                # A slow seller must not hold events back for long.
                loop = asyncio.get_running_loop()
                self._window_timer = loop.call_later(0.5, self.flush)
        else:
            self._later(self._first_delay(), first)

    def flush(self) -> None:
        """Release the events held for reordering, shuffled."""
        if self._window_timer is not None:
            self._window_timer.cancel()
            self._window_timer = None
        window, self._window = self._window, []
        self._rng.shuffle(window)
        for copy in window:
            self._later(self._first_delay(), copy)

    async def wait_idle(self, timeout: float) -> None:  # noqa: ASYNC109 (for wait_deliveries)
        """Until every copy is delivered or given up; ``TimeoutError`` otherwise."""
        self.flush()
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    # --- internals ----------------------------------------------------------------

    def _first_delay(self) -> float:
        delay_max = self._faults.delay_max
        return self._rng.uniform(0.0, delay_max) if delay_max > 0 else 0.0

    def _later(self, delay: float, copy: _Copy) -> None:
        if delay <= 0:
            self._queue.put_nowait(copy)
            return

        def fire() -> None:
            self._timers.discard(handle)
            self._queue.put_nowait(copy)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    async def _work(self) -> None:
        while True:
            copy = await self._queue.get()
            if await self._attempt(copy):
                self._finish(copy, delivered=True)
            elif copy.retries < self._max_retries:
                copy.retries += 1
                self._stats.retried += 1
                self._later(self._retry_interval, copy)
            else:
                self._finish(copy, delivered=False)

    async def _attempt(self, copy: _Copy) -> bool:
        assert self._client is not None
        self._stats.attempted += 1
        try:
            response = await self._client.post(self.url, content=copy.body)
        except httpx.HTTPError as problem:
            self._stats.transport_errors += 1
            log.debug("webhook %s: %s", copy.event_id, problem)
            return False
        except Exception:  # a worker must survive anything a delivery throws
            self._stats.transport_errors += 1
            log.warning("webhook %s: delivery failed unexpectedly", copy.event_id, exc_info=True)
            return False
        self._answers[response.status_code] += 1
        if 200 <= response.status_code < 300:
            self._stats.delivered += 1
            return True
        return False

    def _finish(self, copy: _Copy, *, delivered: bool) -> None:
        event_id = copy.event_id
        if delivered:
            self.delivered[event_id] = None
        left = self._copies_left[event_id] - 1
        if left:
            self._copies_left[event_id] = left
        else:
            del self._copies_left[event_id]
            if event_id not in self.delivered:
                self._stats.gave_up.append(event_id)
        self._stats.in_flight -= 1
        if self._stats.in_flight == 0 and not self._window:
            self._idle.set()
