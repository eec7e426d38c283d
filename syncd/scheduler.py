"""The reconcile job on APScheduler 3.x, tied to the app's lifespan.

One interval job per store with an API: ``max_instances=1`` and coalescing,
so a slow run is never overlapped by the next one in this process, and the
cross-process lock in :mod:`syncd.reconcile` keeps other processes out.

At most ``SYNCD_RECONCILE_CONCURRENCY`` stores reconcile at once; the
others wait their turn (all jobs start together at start-up). However many
stores there are, reconcile then takes a bounded share of the connection
pool and of the threads, and the worker and the receiver keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger("syncd.scheduler")

#: One store's reconcile pass (the app's composition root builds them).
Job = Callable[[], Awaitable[object]]


@dataclass
class RunningScheduler:
    scheduler: AsyncIOScheduler
    running: set[asyncio.Task[object]]

    async def stop(self) -> None:
        self.scheduler.shutdown(wait=False)
        # A run in progress stops at its next page; its cursor stays where it was.
        for task in list(self.running):
            task.cancel()
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)


def start_scheduler(
    jobs: Mapping[str, Job], *, interval: float, concurrency: int
) -> RunningScheduler | None:
    """Run each store's job (by store name) every ``interval`` seconds, the
    first run at once, at most ``concurrency`` of them at a time; None when
    there is nothing to run."""
    if interval <= 0 or not jobs:
        return None
    scheduler = AsyncIOScheduler(timezone=UTC)
    running: set[asyncio.Task[object]] = set()
    turns = asyncio.Semaphore(concurrency)

    async def run(store_name: str) -> None:
        task = asyncio.current_task()
        if task is not None:
            running.add(task)
        try:
            async with turns:
                await jobs[store_name]()
        except asyncio.CancelledError:
            # Shutdown: the run stops at a page boundary, its cursor unmoved.
            log.info("reconcile.cancelled", extra={"store": store_name})
        finally:
            if task is not None:
                running.discard(task)

    for store_name in jobs:
        scheduler.add_job(
            run,
            "interval",
            args=(store_name,),
            seconds=interval,
            id=f"reconcile:{store_name}",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=int(interval),
        )
    scheduler.start()
    return RunningScheduler(scheduler, running)
