"""Reconcile and backfill: bring in from the API what webhooks did not.

Each synced resource is declared in :mod:`syncd.resources` (its endpoint,
since-parameter, state row and snapshot kind); "since when" is always read
from ``sync_state``, never worked out ad hoc.

- **events** (reconcile): list events from ``cursor - lookback``; the ones
  the inbox lacks go in with ``source='reconcile'``. The cursor moves to the
  run's start only after every page is committed.
- **orders / customers** (resource sync and backfill): used when there is no
  events cursor yet, when the cursor is older than the API's event
  retention, and by ``syncd backfill``. Each listed version becomes a
  snapshot event (``source='backfill'``) — the same inbox rows and apply
  rules as webhooks, never a second write path. A batch of pages (1,000
  versions) is stored and applied in one transaction with a checkpoint after
  its last page, so an interrupted sync resumes right after it.

Only one process reconciles a store at a time (:func:`exclusive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete, select
from sqlalchemy.engine import Connection

from syncd import inbox
from syncd.config import DEFAULT_MAX_ATTEMPTS, Settings, StoreConfig
from syncd.db import dialect
from syncd.db.engine import lock_engine
from syncd.db.models import RefreshRequest
from syncd.inbox import utcnow
from syncd.ops.metrics import Metrics
from syncd.resources import BY_NAME, SNAPSHOTTED, SnapshotKind, SnapshottedName
from syncd.shoperti import wire
from syncd.shoperti.client import Page, PageCursor, ShopertiClient
from syncd.state import EventsCursor, LastRun, read_state, write_state, write_state_on
from syncd.vocabulary import EventSource
from syncd.worker import ApplyStep, InThread, drain

log = logging.getLogger("syncd.reconcile")
refresh_requests: Table = RefreshRequest.__table__  # type: ignore[assignment]

Resource = SnapshottedName


# --- the lock -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def exclusive(engine: Engine, name: str) -> AsyncIterator[bool]:
    """Try to take a cross-process lock for the duration of the block. The
    lock's connection is not one of ``engine``'s pooled ones (see
    :func:`syncd.db.engine.lock_engine`): the block's work takes those."""
    conn = await asyncio.to_thread(lock_engine(engine).connect)
    lock = dialect.session_lock(conn, name)
    try:
        got = await asyncio.to_thread(lock.__enter__)
        try:
            yield got
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(conn.close)


# --- one run --------------------------------------------------------------------------


@dataclass
class RunReport:
    store: str
    mode: str = "events"  # events | resources | skipped
    started_at: str = ""
    finished_at: str | None = None
    events_seen: int = 0
    found: int = 0  # events the inbox did not have: missed by webhooks
    resources_seen: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    since: str | None = None
    refreshed: int = 0  # current copies fetched to settle undecided versions


Progress = Callable[[str, int, int | None], None]  # (resource, done, total)


async def sync_resource(
    engine: Engine,
    store: StoreConfig,
    client: ShopertiClient,
    resource: Resource,
    since: datetime | None,
    *,
    progress: Progress | None = None,
    apply_batch: int = 1000,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    step: ApplyStep | None = None,
) -> tuple[int, int]:
    """List ``resource`` (orders or customers) updated since ``since`` and put
    each version in the inbox as a snapshot event, applied in the transaction
    that stores it (``step.add``: :func:`syncd.worker.add_and_apply`, in the
    apply process under ``syncd serve``); then applies whatever else the store
    has pending.

    Resumes from the page checkpoint when there is one. Returns (versions
    seen, versions new to the inbox).
    """
    declared = BY_NAME[resource]
    assert declared.snapshot is not None, f"{resource} are not listed as snapshots"
    run = _ResourceSync(
        engine,
        store,
        step or InThread(engine, apply_batch, max_attempts),
        resource,
        declared.snapshot,
        declared.state,
        since,
        apply_batch,
        progress,
    )
    start = await run.resume()
    # The next batch downloads while this one is written: a queue of a batch's
    # worth of pages (at 100 a page) keeps memory bounded and the database busy.
    pages: asyncio.Queue[Page | BaseException | None] = asyncio.Queue(
        maxsize=max(2, apply_batch // 100)
    )
    listing = client.pages(resource, since=since, start=start, concurrency=store.api_concurrency)
    downloader = asyncio.create_task(_download(listing, pages))
    try:
        await run.consume(pages)
    finally:
        downloader.cancel()
        await asyncio.gather(downloader, return_exceptions=True)
    await drain(run.applier, store)
    await asyncio.to_thread(write_state, engine, store.name, run.state, None)
    return run.seen, run.found


async def _download(
    listing: AsyncGenerator[Page, None], pages: asyncio.Queue[Page | BaseException | None]
) -> None:
    """Put the listing's pages on ``pages``, then None (or the error that
    ended it). Pages come in order however many requests are in flight, so
    each checkpoint is exactly where a rerun must start."""
    try:
        async with contextlib.aclosing(listing):  # closed: no request left in flight
            async for page in listing:
                await pages.put(page)
        await pages.put(None)
    except Exception as exc:
        await pages.put(exc)


@dataclass
class _ResourceSync:
    """One resource sync's writing side: batches of pages, each stored and
    applied in one transaction with the checkpoint after its last page."""

    engine: Engine
    store: StoreConfig
    applier: ApplyStep
    resource: Resource
    kind: SnapshotKind
    state: str  # the checkpoint's sync_state row
    since: datetime | None
    apply_batch: int
    progress: Progress | None
    seen: int = 0
    found: int = 0
    next_analyze: int = 0
    batch: list[dict[str, Any]] = field(default_factory=list)  # whole pages' snapshots

    async def resume(self) -> PageCursor | None:
        """Where the listing starts: the checkpoint's page, if it is about
        the same ``since``; None for the first page."""
        saved = await asyncio.to_thread(read_state, self.engine, self.store.name, self.state)
        start = None
        if saved is not None and saved.get("since") == _iso(self.since):
            start = PageCursor.from_dict(saved["cursor"])
            self.seen = int(saved.get("seen", 0))
            self.found = int(saved.get("found", 0))
        self.next_analyze = self.seen + 4 * self.apply_batch  # then each time it doubles
        return start

    async def consume(self, pages: asyncio.Queue[Page | BaseException | None]) -> None:
        last: Page | None = None
        while (page := await pages.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            read_at = page.read_at or utcnow()
            self.batch.extend(wire.snapshot_event(self.kind, item, read_at) for item in page.items)
            last = page
            if len(self.batch) >= self.apply_batch:
                await self._store(page)
        if self.batch and last is not None:
            await self._store(last)  # the rest

    async def _store(self, last: Page) -> None:
        # One transaction for the batch, its outcomes and the checkpoint after
        # its last page: a restart resumes right after it.
        seen_after = self.seen + len(self.batch)
        after = None
        if last.next is not None:
            after = {"since": _iso(self.since), "cursor": last.next.to_dict(), "seen": seen_after}
        checkpoint = PageCheckpoint(self.store.name, self.state, after, self.found)
        added = await self.applier.add(
            self.store, self.batch, source=EventSource.BACKFILL, also=checkpoint
        )
        self.seen = seen_after
        self.found += len(added.new_ids)
        self.batch = []
        if self.seen >= self.next_analyze:
            await asyncio.to_thread(_analyze, self.engine)
            self.next_analyze = self.seen * 2
        if self.progress is not None:
            self.progress(self.resource, self.seen, last.total)


@dataclass(frozen=True)
class PageCheckpoint:
    """Where a rerun of a resource sync starts, written in the transaction that
    stores the batch before it (``after``: None once the last page is in). A
    record, not a closure: it may run in the apply process."""

    store: str
    name: str
    after: dict[str, Any] | None
    found: int  # versions new to the inbox before this batch

    def __call__(self, conn: Connection, added: inbox.Added) -> None:
        value = None
        if self.after is not None:
            value = {**self.after, "found": self.found + len(added.new_ids)}
        write_state_on(conn, self.store, self.name, value)


# --- undecided versions ---------------------------------------------------------------


async def refresh_undecided(
    engine: Engine,
    store: StoreConfig,
    client: ShopertiClient,
    *,
    step: ApplyStep | None = None,
    limit: int = 500,
) -> int:
    """Fetch the current copy of each order and customer whose newest version
    the stored events cannot decide (``refresh_requests``, written by apply),
    and put it through the inbox as a snapshot, applied at once: read after
    the tie, it is newer than both versions (docs/apply-rules.md). A request
    is removed with the copy that settles it; one not yet due, or whose fetch
    failed, stays for the next run. Returns how many copies were applied."""
    due = await asyncio.to_thread(_due_refreshes, engine, store.name, utcnow(), limit)
    if not due:
        return 0
    applier: ApplyStep = step or InThread(engine, limit, DEFAULT_MAX_ATTEMPTS)
    copies = await client.current_copies(due)
    gone_at = utcnow()  # a copy the API no longer has (404): nothing left to decide
    snapshots = [
        wire.snapshot_event(resource, copy.data, copy.read_at, distinct=True)
        for (resource, _), copy in zip(due, copies, strict=True)
        if copy is not None
    ]

    settled = Settled(
        store.name,
        tuple(
            (resource, resource_id, copy.read_at if copy is not None else gone_at)
            for (resource, resource_id), copy in zip(due, copies, strict=True)
        ),
    )
    await applier.add(store, snapshots, source=EventSource.RECONCILE, also=settled)
    log.info("reconcile.refreshed", extra={"store": store.name, "count": len(snapshots)})
    return len(snapshots)


@dataclass(frozen=True)
class Settled:
    """Removes the refresh requests that copies read at ``read_at`` settle, in
    the transaction that stores the copies (a record: it may run in the apply
    process)."""

    store: str
    copies: tuple[tuple[str, str, datetime], ...]  # (resource, id, read at)

    def __call__(self, conn: Connection, added: inbox.Added) -> None:
        for resource, resource_id, read_at in self.copies:
            conn.execute(
                delete(refresh_requests).where(
                    refresh_requests.c.store == self.store,
                    refresh_requests.c.resource == resource,
                    refresh_requests.c.resource_id == resource_id,
                    # A tie found after this read needs a later one.
                    refresh_requests.c.not_before <= read_at,
                )
            )


_KINDS: dict[str, SnapshotKind] = {"order": "order", "customer": "customer"}


def _due_refreshes(
    engine: Engine, store: str, now: datetime, limit: int
) -> list[tuple[SnapshotKind, str]]:
    with dialect.reading(engine) as conn:
        rows = conn.execute(
            select(refresh_requests.c.resource, refresh_requests.c.resource_id)
            .where(refresh_requests.c.store == store, refresh_requests.c.not_before <= now)
            .order_by(refresh_requests.c.not_before)
            .limit(limit)
        ).all()
        conn.commit()
    return [(_KINDS[row.resource], row.resource_id) for row in rows]


def _analyze(engine: Engine) -> None:
    from syncd.db.models import metadata

    with engine.begin() as conn:
        dialect.analyze(conn, metadata.sorted_tables)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def reconcile_store(
    engine: Engine,
    settings: Settings,
    store: StoreConfig,
    client: ShopertiClient,
    *,
    metrics: Metrics | None = None,
    apply_now: bool = False,
    step: ApplyStep | None = None,
) -> RunReport:
    """One reconcile pass for ``store`` (recover what webhooks missed: docs/api.md §1).

    What it applies goes through ``step`` (the daemon's apply process under
    ``syncd serve``; a thread otherwise). Events it lists are only stored,
    for the worker, unless ``apply_now`` (the ``reconcile`` command)."""
    applier: ApplyStep = step or InThread(engine, settings.worker_batch_size, settings.max_attempts)
    report = RunReport(store=store.name, started_at=utcnow().isoformat())
    async with exclusive(engine, f"reconcile:{store.name}") as got:
        # The run starts once it holds the lock (taking it opens a connection),
        # so that runs of two daemons never seem to overlap.
        started = utcnow()
        report.started_at = started.isoformat()
        if not got:
            report.mode = "skipped"
            report.error = "another process is reconciling this store"
            log.info("reconcile.skipped", extra={"store": store.name, "reason": report.error})
            if metrics is not None:
                metrics.reconcile_runs.labels(store.name, "skipped").inc()
            return report
        run = _Pass(engine, settings, store, client, applier, report, started)
        try:
            await run.run(apply_now)
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("reconcile.failed", extra={"store": store.name, "error": report.error})
        finally:
            report.finished_at = utcnow().isoformat()
            await _record(engine, report)
    _observe(report, metrics)
    return report


@dataclass
class _Pass:
    """The work of one reconcile pass, once it holds the store's lock."""

    engine: Engine
    settings: Settings
    store: StoreConfig
    client: ShopertiClient
    applier: ApplyStep
    report: RunReport
    started: datetime

    async def run(self, apply_now: bool) -> None:
        saved = await asyncio.to_thread(EventsCursor.load, self.engine, self.store.name)
        cursor = saved.at if saved is not None else None
        retention = timedelta(seconds=self.settings.event_retention)
        lookback = timedelta(seconds=self.settings.reconcile_lookback)
        since = cursor - lookback if cursor is not None else None
        self.report.since = _iso(since)
        if since is None or since < self.started - retention:
            await self._resources(since)  # the API no longer lists all we missed
        else:
            await self._events(since, apply_now)
        self.report.refreshed = await refresh_undecided(
            self.engine, self.store, self.client, step=self.applier
        )
        # Every page is committed: only now may the cursor move.
        await asyncio.to_thread(EventsCursor(self.started).save, self.engine, self.store.name)

    async def _resources(self, since: datetime | None) -> None:
        self.report.mode = "resources"
        for resource in SNAPSHOTTED:
            seen, found = await sync_resource(
                self.engine,
                self.store,
                self.client,
                resource,
                since,
                max_attempts=self.settings.max_attempts,
                step=self.applier,
            )
            self.report.resources_seen[resource] = seen
            self.report.found += found

    async def _events(self, since: datetime, apply_now: bool) -> None:
        store = self.store
        listing = self.client.pages("events", since=since, concurrency=store.api_concurrency)
        async with contextlib.aclosing(listing):  # closed: no request left in flight
            async for page in listing:
                added = await asyncio.to_thread(
                    inbox.ingest,
                    self.engine,
                    store.name,
                    page.items,
                    source=EventSource.RECONCILE,
                    verified=True,
                )
                self.report.events_seen += added.seen
                self.report.found += len(added.new_ids)
        if apply_now:
            await drain(self.applier, store)


async def _record(engine: Engine, report: RunReport) -> None:
    """Save the pass as the store's last run; a failed pass keeps the last
    success and when the failures began. Never raises: the pass is over."""
    previous = None
    if report.error is not None:
        previous = await asyncio.to_thread(LastRun.load, engine, report.store)
    last = LastRun.after(asdict(report), previous)
    with contextlib.suppress(Exception):
        await asyncio.to_thread(last.save, engine, report.store)


def _observe(report: RunReport, metrics: Metrics | None) -> None:
    if metrics is not None:
        metrics.reconcile_runs.labels(report.store, "error" if report.error else "ok").inc()
        if report.found:
            metrics.reconcile_found.labels(report.store).inc(report.found)
    log.info(
        "reconcile.finished",
        extra={
            "store": report.store,
            "mode": report.mode,
            "found": report.found,
            "error": report.error,
        },
    )
