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
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Table, delete, select
from sqlalchemy.engine import Connection

from syncd import inbox
from syncd.config import Settings, StoreConfig
from syncd.db import dialect
from syncd.db.engine import lock_engine
from syncd.db.models import RefreshRequest
from syncd.inbox import utcnow
from syncd.ops.metrics import Metrics
from syncd.resources import BY_NAME, SNAPSHOTTED, SnapshottedName
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
    max_attempts: int = 8,
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
    applier: ApplyStep = step or InThread(engine, apply_batch, max_attempts)
    declared = BY_NAME[resource]
    checkpoint_name = declared.state
    checkpoint = await asyncio.to_thread(read_state, engine, store.name, checkpoint_name)
    start = None
    seen = found = 0
    if checkpoint is not None and checkpoint.get("since") == _iso(since):
        start = PageCursor.from_dict(checkpoint["cursor"])
        seen = int(checkpoint.get("seen", 0))
        found = int(checkpoint.get("found", 0))
    single = declared.snapshot
    assert single is not None, f"{resource} are not listed as snapshots"
    # The next batch downloads while this one is written: a queue of a batch's
    # worth of pages (at 100 a page) keeps memory bounded and the database busy.
    pages: asyncio.Queue[Page | BaseException | None] = asyncio.Queue(
        maxsize=max(2, apply_batch // 100)
    )

    async def download() -> None:
        try:
            # Up to api_concurrency requests in flight; pages still come in order,
            # so each checkpoint below is exactly where a rerun must start.
            listing = client.pages(
                resource, since=since, start=start, concurrency=store.api_concurrency
            )
            async with contextlib.aclosing(listing):  # closed: no request left in flight
                async for page in listing:
                    await pages.put(page)
            await pages.put(None)
        except Exception as exc:
            await pages.put(exc)

    downloader = asyncio.create_task(download())
    next_analyze = seen + 4 * apply_batch  # then each time the import has doubled
    batch: list[dict[str, Any]] = []  # snapshots of whole pages, up to apply_batch

    async def store_batch(last: Page) -> None:
        # One transaction for the batch, its outcomes and the checkpoint after
        # its last page: a restart resumes right after it.
        nonlocal seen, found, next_analyze
        seen_after = seen + len(batch)
        after = None
        if last.next is not None:
            after = {"since": _iso(since), "cursor": last.next.to_dict(), "seen": seen_after}
        checkpoint = PageCheckpoint(store.name, checkpoint_name, after, found)
        added = await applier.add(store, batch, source=EventSource.BACKFILL, also=checkpoint)
        seen = seen_after
        found += len(added.new_ids)
        batch.clear()
        if seen >= next_analyze:
            await asyncio.to_thread(_analyze, engine)
            next_analyze = seen * 2
        if progress is not None:
            progress(resource, seen, last.total)

    try:
        last: Page | None = None
        while (page := await pages.get()) is not None:
            if isinstance(page, BaseException):
                raise page
            read_at = page.read_at or utcnow()
            batch.extend(wire.snapshot_event(single, item, read_at) for item in page.items)
            last = page
            if len(batch) >= apply_batch:
                await store_batch(page)
        if batch and last is not None:
            await store_batch(last)  # the rest
    finally:
        downloader.cancel()
        await asyncio.gather(downloader, return_exceptions=True)
    await drain(applier, store)
    await asyncio.to_thread(write_state, engine, store.name, checkpoint_name, None)
    return seen, found


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
    applier: ApplyStep = step or InThread(engine, limit, max_attempts=8)
    copies = await client.current_copies(due)  # type: ignore[arg-type]
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


def _due_refreshes(engine: Engine, store: str, now: datetime, limit: int) -> list[tuple[str, str]]:
    with dialect.reading(engine) as conn:
        rows = conn.execute(
            select(refresh_requests.c.resource, refresh_requests.c.resource_id)
            .where(refresh_requests.c.store == store, refresh_requests.c.not_before <= now)
            .order_by(refresh_requests.c.not_before)
            .limit(limit)
        ).all()
        conn.commit()
    return [(row.resource, row.resource_id) for row in rows]


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
        try:
            saved = await asyncio.to_thread(EventsCursor.load, engine, store.name)
            cursor = saved.at if saved is not None else None
            retention = timedelta(seconds=settings.event_retention)
            lookback = timedelta(seconds=settings.reconcile_lookback)
            if cursor is None or cursor - lookback < started - retention:
                report.mode = "resources"
                since = cursor - lookback if cursor is not None else None
                report.since = _iso(since)
                for resource in SNAPSHOTTED:
                    seen, found = await sync_resource(
                        engine,
                        store,
                        client,
                        resource,
                        since,
                        max_attempts=settings.max_attempts,
                        step=applier,
                    )
                    report.resources_seen[resource] = seen
                    report.found += found
            else:
                since = cursor - lookback
                report.since = _iso(since)
                listing = client.pages("events", since=since, concurrency=store.api_concurrency)
                async with contextlib.aclosing(listing):  # closed: no request left in flight
                    async for page in listing:
                        added = await asyncio.to_thread(
                            inbox.ingest,
                            engine,
                            store.name,
                            page.items,
                            source=EventSource.RECONCILE,
                            verified=True,
                        )
                        report.events_seen += added.seen
                        report.found += len(added.new_ids)
                if apply_now:
                    await drain(applier, store)
            report.refreshed = await refresh_undecided(engine, store, client, step=applier)
            # Every page is committed: only now may the cursor move.
            await asyncio.to_thread(EventsCursor(started).save, engine, store.name)
        except Exception as exc:
            report.error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("reconcile.failed", extra={"store": store.name, "error": report.error})
        finally:
            report.finished_at = utcnow().isoformat()
            previous = None  # a failed pass keeps the last success and when failures began
            if report.error is not None:
                previous = await asyncio.to_thread(LastRun.load, engine, store.name)
            last = LastRun.after(asdict(report), previous)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(last.save, engine, store.name)
    if metrics is not None:
        metrics.reconcile_runs.labels(store.name, "error" if report.error else "ok").inc()
        if report.found:
            metrics.reconcile_found.labels(store.name).inc(report.found)
    log.info(
        "reconcile.finished",
        extra={
            "store": store.name,
            "mode": report.mode,
            "found": report.found,
            "error": report.error,
        },
    )
    return report
