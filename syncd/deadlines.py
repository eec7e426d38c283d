"""One bound for many waits, kept without a timer each.

The receiver bounds each body read and each wait for a commit; a timer per
request costs more than the rest of handing a webhook to the inbox. A
:class:`DeadlineSweep` holds every wait of one bound in the order they began
(so their deadlines are in order too) and one loop callback, re-armed while
any wait is watched, ends those past their deadline.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class DeadlineSweep:
    """Calls a watched wait's ``expire`` once ``bound`` seconds have passed,
    unless it is ``done`` first; at most a tenth of the bound (0.25 s at
    most) late."""

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self._interval = min(max(bound / 10, 0.01), 0.25)
        self._watched: deque[tuple[float, Callable[[], bool], Callable[[], None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, done: Callable[[], bool], expire: Callable[[], None]) -> float:
        """Watch a wait that begins now; returns its deadline (the loop's clock)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bound
        self._watched.append((deadline, done, expire))
        if self._timer is None:
            self._arm(loop)
        return deadline

    @property
    def sweeping(self) -> bool:
        """A sweep is due (some wait was watched at the last one)."""
        return self._timer is not None

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(self._interval, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        watched, now = self._watched, loop.time()
        while watched and (watched[0][1]() or watched[0][0] <= now):
            _, done, expire = watched.popleft()
            if not done():
                expire()
        if watched:
            self._arm(loop)
