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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from syncd.reconcile import reconcile_store

if TYPE_CHECKING:
    from syncd.app import Daemon

log = logging.getLogger("syncd.scheduler")


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


def start_scheduler(daemon: Daemon) -> RunningScheduler | None:
    settings = daemon.settings
    if settings.reconcile_interval <= 0 or not daemon.clients:
        return None
    scheduler = AsyncIOScheduler(timezone=UTC)
    running: set[asyncio.Task[object]] = set()
    turns = asyncio.Semaphore(settings.reconcile_concurrency)

    for store in settings.stores.values():
        client = daemon.clients.get(store.name)
        if client is None:
            continue

        async def job(store_name: str = store.name) -> None:
            task = asyncio.current_task()
            if task is not None:
                running.add(task)
            try:
                async with turns:
                    report = await reconcile_store(
                        daemon.engine,
                        settings,
                        settings.stores[store_name],
                        daemon.clients[store_name],
                        metrics=daemon.metrics,
                    )
                if report.found:
                    daemon.worker.wake()
            except asyncio.CancelledError:
                # Shutdown: the run stops at a page boundary, its cursor unmoved.
                log.info("reconcile.cancelled", extra={"store": store_name})
            finally:
                if task is not None:
                    running.discard(task)

        scheduler.add_job(
            job,
            "interval",
            seconds=settings.reconcile_interval,
            id=f"reconcile:{store.name}",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=int(settings.reconcile_interval),
        )
    scheduler.start()
    return RunningScheduler(scheduler, running)
