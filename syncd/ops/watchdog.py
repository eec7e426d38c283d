"""The systemd watchdog: ``WATCHDOG=1`` while the daemon really works.

systemd sets ``$WATCHDOG_USEC`` (from the unit's ``WatchdogSec=``) and
``$WATCHDOG_PID``; if no ``WATCHDOG=1`` arrives within that time, it kills
the service and, per ``Restart=``, starts it again. The pings come from a
task on the daemon's event loop, at half the interval, so they stop when:

- the event loop no longer turns (something blocks it): the task never runs;
- the inbox writer (the task that commits webhooks) has died;
- the worker loop has died;
- the apply process does not answer: its heartbeat (a thread in the child
  that stamps a shared clock twice a second) is older than the ping
  interval — it hangs, or was stopped.

A withheld ping is logged once (with the reason) when it starts and once
when pings resume; the last word is systemd's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from syncd.ops import systemd

log = logging.getLogger("syncd.watchdog")


def interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or None when the
    watchdog is off or meant for another process (``$WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not raw.isdigit() or int(raw) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(raw) / 1_000_000 / 2


async def run(every: float, problem: Callable[[], str | None]) -> None:
    """Ping every ``every`` seconds while ``problem()`` says None."""
    withheld: str | None = None
    while True:
        reason = problem()
        if reason is None:
            systemd.notify("WATCHDOG=1")
            if withheld is not None:
                log.info("watchdog.resumed", extra={"reason": withheld})
        elif reason != withheld:
            log.warning("watchdog.withheld", extra={"reason": reason})
        withheld = reason
        await asyncio.sleep(every)


def start(problem: Callable[[], str | None]) -> asyncio.Task[None] | None:
    """The ping task on the running loop, if systemd asked for a watchdog."""
    every = interval()
    if every is None:
        return None
    log.info("watchdog.started", extra={"seconds": every})
    return asyncio.create_task(run(every, problem), name="syncd-watchdog")


async def stop(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
