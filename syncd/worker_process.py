"""The worker's apply step in a child process (``syncd serve``).

Receiving webhooks and applying events are both Python work; in one process
they take turns on one interpreter lock, so every event applied is time
not spent acknowledging (README "Performance" has the figures). Everything
else stays in the daemon's process: the worker loop (wake-ups, lingering,
API verification, metrics); only the apply step crosses over: the worker's batches
(:func:`syncd.worker.apply_pending`) and the events reconcile and backfill
store and apply at once (:func:`syncd.worker.add_and_apply`), one call at a
time; what they did comes back.

The child ignores SIGINT and SIGTERM (the daemon stops it after its own
graceful stop, once the batch in hand is done) and exits by itself if the
daemon dies without stopping it (``kill -9``): nothing is lost either way,
since a batch is one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from ctypes import c_double
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from syncd import inbox
from syncd.config import Settings, StoreConfig
from syncd.vocabulary import EventSource
from syncd.worker import Report, add_and_apply, apply_pending

log = logging.getLogger("syncd.worker")
_engine: Engine | None = None  # the child's own engine
HEARTBEAT_SECONDS = 0.5
T = TypeVar("T")


def _start_child(
    database_url: str,
    log_level: str,
    hidden: list[str],
    parent: int,
    heartbeat: c_double | None = None,
) -> None:
    """Set the child up. ``parent`` is the daemon's pid as the daemon saw it:
    read here, after a start that takes a second, it could already be init's
    (a daemon killed meanwhile) and the child would wait for a death that
    already happened, forever. ``heartbeat``: a shared clock the child stamps
    twice a second, so the daemon can tell it answers (the systemd watchdog)."""
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(
        target=_exit_with, args=(parent, heartbeat), name="syncd-orphan", daemon=True
    ).start()
    from syncd.db.engine import make_engine
    from syncd.ops import logs, memory

    logs.setup(log_level)
    logs.hide(hidden)
    _engine = make_engine(database_url)
    memory.settle()


def _exit_with(parent: int, heartbeat: c_double | None = None) -> None:
    while os.getppid() == parent:
        if heartbeat is not None:
            heartbeat.value = time.monotonic()  # one system-wide clock on Linux
        time.sleep(HEARTBEAT_SECONDS)
    os._exit(0)  # the daemon is gone: so is whoever would read our answers


def _apply(store: StoreConfig, limit: int, max_attempts: int) -> Report:
    assert _engine is not None, "the apply process was not started"
    return apply_pending(_engine, store, limit=limit, max_attempts=max_attempts)


def _add(
    store: StoreConfig,
    payloads: Sequence[Mapping[str, Any]],
    source: EventSource,
    also: Callable[[Connection, inbox.Added], None] | None,
) -> inbox.Added:
    assert _engine is not None, "the apply process was not started"
    return add_and_apply(_engine, store, payloads, source=source, also=also)


class ApplyProcess:
    """The apply step (:class:`syncd.worker.ApplyStep`) in one child process,
    started on first use and started again if it dies: the worker's batches
    and reconcile's and backfill's alike, one after another."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.batch_size = settings.worker_batch_size
        self._pool: ProcessPoolExecutor | None = None
        self._heartbeat: c_double | None = None

    def _start(self) -> ProcessPoolExecutor:
        settings = self.settings
        context = multiprocessing.get_context("spawn")
        # Stamped now: a child still starting counts as answering. No lock: a
        # child stopped while holding it would block the daemon's reader; an
        # aligned double is written whole.
        self._heartbeat = context.Value("d", time.monotonic(), lock=False)
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=context,
            initializer=_start_child,
            initargs=(
                settings.database_url,
                settings.log_level,
                settings.secrets(),
                os.getpid(),
                self._heartbeat,
            ),
        )

    def silent_for(self) -> float:
        """Seconds since the child last stamped its heartbeat (0 when no child
        runs: one is started on the next batch)."""
        if self._pool is None or self._heartbeat is None:
            return 0.0
        return max(time.monotonic() - self._heartbeat.value, 0.0)

    async def pending(self, store: StoreConfig) -> Report:
        return await self._run(store, _apply, store, self.batch_size, self.settings.max_attempts)

    async def add(
        self,
        store: StoreConfig,
        payloads: Sequence[Mapping[str, Any]],
        *,
        source: EventSource,
        also: Callable[[Connection, inbox.Added], None] | None = None,
    ) -> inbox.Added:
        return await self._run(store, _add, store, list(payloads), source, also)

    async def _run(self, store: StoreConfig, call: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = self._start()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, call, *args)
        except BrokenProcessPool:
            # Killed (e.g. out of memory): its transaction rolled back, so the
            # batch is still pending (or still unread, for reconcile to list
            # again); the next call starts a new child.
            log.warning("worker.apply_process_died", extra={"store": store.name})
            self._pool.shutdown(wait=False)
            self._pool = None
            raise

    def close(self) -> None:
        """Let the batch in hand finish, then stop the child."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
