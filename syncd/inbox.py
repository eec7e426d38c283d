"""The inbox: every event enters the database here, and only here.

Webhooks, reconcile, backfill and audit differ only in ``source`` (and
whether the new events are applied at once, :func:`ingest`). An event is a
row in ``events`` with ``status = 'pending'`` once committed; the worker
takes it from there (:func:`claim`). Putting the same event id twice
changes nothing. :func:`backlog` counts what waits or went wrong.

:class:`GroupCommitter` lets concurrent webhook requests share one
transaction: each request waits for the commit that holds its event, so an
acknowledgement is exactly as durable as with one commit per request, at a
fraction of the commits. It never applies anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, Select, Table, func, or_, select
from sqlalchemy.engine import Connection

from syncd.config import StoreConfig
from syncd.db import dialect
from syncd.db.models import Event as EventRow
from syncd.deadlines import DeadlineSweep
from syncd.errors import DatabaseUnavailable
from syncd.shoperti import wire
from syncd.vocabulary import BACKLOG, EventSource, EventStatus, VerifyMode

log = logging.getLogger("syncd.inbox")
DEADLOCK_RETRIES = 5
events_table: Table = EventRow.__table__  # type: ignore[assignment]


def utcnow() -> datetime:
    return datetime.now(UTC)


def event_row(
    store: str,
    event: wire.Event,
    *,
    source: EventSource,
    verified: bool,
    snapshot: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or utcnow()
    return {
        "store": store,
        "id": event.id,
        "type": event.type,
        "resource": event.resource,
        "resource_id": event.resource_id,
        "created_at": event.created_at,
        "received_at": now,
        "source": source,
        "status": EventStatus.PENDING,
        "verified": verified,
        "snapshot": snapshot,
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "payload": dict(event.payload),
        "processed_at": None,
    }


def put(conn: Connection, rows: Sequence[dict[str, Any]], *, expect_new: bool = False) -> None:
    """Insert event rows; ids already in the inbox are left as they are.
    ``expect_new``: the ids are most likely absent (checked by
    :func:`fresh_events`, or webhooks, whose retried deliveries are rare),
    so the rows are written the fast way first (COPY on PostgreSQL)."""
    dialect.insert_ignoring_duplicates(conn, events_table, rows, expect_new=expect_new)


def known_ids(conn: Connection, store: str, ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for ids_in in dialect.key_in(conn, events_table.c.id, list(dict.fromkeys(ids))):
        found.update(
            conn.scalars(select(events_table.c.id).where(events_table.c.store == store, ids_in))
        )
    return found


def claim(store: StoreConfig, now: datetime, limit: int) -> Select[Any]:
    """The oldest ``limit`` events of ``store`` ready to apply, locked
    (``ix_events_queue`` hands them over in order, however long the backlog)."""
    ready = (
        events_to_apply(
            store.name,
            events_table.c.status == EventStatus.PENDING,
            or_(events_table.c.next_attempt_at.is_(None), events_table.c.next_attempt_at <= now),
        )
        .order_by(events_table.c.received_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if store.verify == VerifyMode.API:
        ready = ready.where(events_table.c.verified.is_(True))
    return ready


def events_to_apply(store: str, *conditions: Any) -> Select[Any]:
    """The columns the apply path reads, of ``store``'s events that match."""
    return select(
        events_table.c.id,
        events_table.c.type,
        events_table.c.payload,
        events_table.c.snapshot,
        events_table.c.attempts,
        events_table.c.created_at,
    ).where(events_table.c.store == store, *conditions)


def backlog(engine: Engine) -> dict[tuple[str, str], int]:
    """Pending, failed and rejected counts by (store, status), for the metrics."""
    with dialect.reading(engine) as conn:
        rows = conn.execute(
            select(events_table.c.store, events_table.c.status, func.count())
            .where(events_table.c.status.in_(BACKLOG))
            .group_by(events_table.c.store, events_table.c.status)
        ).all()
        conn.commit()
    return {(row[0], row[1]): int(row[2]) for row in rows}


@dataclass(frozen=True)
class Added:
    new_ids: list[str]
    seen: int


class ApplyAtOnce(Protocol):
    """How :func:`ingest` applies new events in the transaction that stores
    them (backfill, resource sync, audit): the worker's apply step."""

    def lock(self, conn: Connection) -> AbstractContextManager[object]:
        """The store's apply lock, held from before the inbox is read until commit."""
        ...

    def __call__(
        self, conn: Connection, events: Sequence[wire.Event], rows: list[dict[str, Any]]
    ) -> None:
        """Apply ``events`` and write each one's outcome into its row (same order)."""
        ...


def ingest(
    engine: Engine,
    store: str,
    payloads: Sequence[Mapping[str, Any]],
    *,
    source: EventSource,
    verified: bool = True,
    snapshot: bool = False,
    apply_at_once: ApplyAtOnce | None = None,
    also: Callable[[Connection, Added], None] | None = None,
) -> Added:
    """Put events read from the API into the inbox in one transaction; says
    which ids were not there before (webhooks go through :class:`GroupCommitter`).

    Reconcile, backfill and audit differ only in ``source`` and in whether the
    new events are applied at once (``apply_at_once``: each is then written
    once, with its outcome, instead of inserted pending for the worker).
    ``also`` runs in the same transaction, told what was added (a checkpoint
    that must commit with the events).
    """
    events = parse_fetched(payloads)
    now = utcnow()
    with engine.connect() as conn:
        lock = apply_at_once.lock(conn) if apply_at_once else contextlib.nullcontext()
        with lock:
            fresh = fresh_events(conn, store, events)
            rows = [
                fetched_row(store, e, source=source, verified=verified, snapshot=snapshot, now=now)
                for e in fresh
            ]
            if apply_at_once is not None:
                apply_at_once(conn, fresh, rows)
            put(conn, rows, expect_new=True)
            added = Added(new_ids=[e.id for e in fresh], seen=len(events))
            if also is not None:
                also(conn, added)
            conn.commit()
    return added


def parse_fetched(payloads: Sequence[Mapping[str, Any]]) -> list[wire.Event]:
    """Events as the API listed them, ready for the inbox (NULs replaced).

    An event whose JSON cannot be stored (nested too deep) keeps only its
    envelope and says why (``Event.unstorable``); :func:`fetched_row` records
    it ``failed``: it must not stop the events around it, and the next
    listing finds it known.
    """
    events = [wire.parse_fetched(payload) for payload in payloads]
    for event in events:
        if event.unstorable is not None:
            log.warning(
                "inbox.unstorable_event",
                extra={"event_id": event.id, "event_type": event.type, "error": event.unstorable},
            )
    return events


def fetched_row(
    store: str,
    event: wire.Event,
    *,
    source: EventSource,
    verified: bool,
    snapshot: bool = False,
    now: datetime,
) -> dict[str, Any]:
    """The inbox row of an event read from the API: pending, or failed at
    once when it cannot be stored (:func:`parse_fetched`)."""
    row = event_row(store, event, source=source, verified=verified, snapshot=snapshot, now=now)
    if event.unstorable is not None:
        row.update(
            status=EventStatus.FAILED, last_error=event.unstorable, attempts=1, processed_at=now
        )
    return row


def fresh_events(conn: Connection, store: str, events: Sequence[wire.Event]) -> list[wire.Event]:
    """``events`` the inbox does not hold yet, each id once."""
    present = known_ids(conn, store, (event.id for event in events))
    fresh: dict[str, wire.Event] = {}
    for event in events:
        if event.id not in present:
            fresh.setdefault(event.id, event)
    return list(fresh.values())


class GroupCommitter:
    """Commits webhook events in shared transactions, one writer thread.

    While one commit runs, the requests that arrive queue up; the next commit
    takes all of them (up to ``max_batch``). At low load that is one event
    per commit with no added wait; under load, many.

    A request waits at most ``commit_timeout`` seconds for its commit. A
    database that stops answering (frozen, or a network path that went
    dead) raises no error: without the bound every request would hang as long
    as the database does, long after the platform's sender gave up. Past it
    the request is told "not committed" (503: the platform retries); its row
    stays queued and may still commit later, which is harmless, since the
    inbox ignores an id it holds already. One
    :class:`~syncd.deadlines.DeadlineSweep` keeps the bound for all requests.
    """

    def __init__(
        self, engine: Engine, *, max_batch: int = 500, commit_timeout: float = 10.0
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.commit_timeout = commit_timeout
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[None]]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncd-inbox")
        self._task: asyncio.Task[None] | None = None
        self._deadlines = DeadlineSweep(commit_timeout)
        self.commits = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="syncd-group-commit")

    @property
    def running(self) -> bool:
        """The writer task is started and has not ended (the watchdog asks)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def put(self, row: dict[str, Any]) -> None:
        """Returns once ``row`` is committed; raises DatabaseUnavailable if not."""
        if self._task is None:
            raise DatabaseUnavailable("the inbox is not accepting events")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def expire() -> None:
            future.set_exception(
                DatabaseUnavailable(
                    f"not committed within {self.commit_timeout:g} s (it may be later)"
                )
            )

        self._deadlines.watch(future.done, expire)
        self._queue.put_nowait((row, future))  # unbounded: never waits
        await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            rows = [row for row, _ in batch]
            try:
                errors = await loop.run_in_executor(self._executor, self._commit, rows)
            except Exception as exc:  # never let the writer die
                errors = [exc] * len(rows)
            for (_, future), error in zip(batch, errors, strict=True):
                if not future.done():
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(DatabaseUnavailable(_reason(error)))
                self._queue.task_done()

    def _commit(self, rows: list[dict[str, Any]]) -> list[BaseException | None]:
        # Duplicates inside one batch: keep the first; the insert skips known ids.
        unique = list({(row["store"], row["id"]): row for row in reversed(rows)}.values())
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:
                with self.engine.begin() as conn:
                    # Retried deliveries of stored events are rare: COPY first, and
                    # only a key found present falls back to the insert that skips it.
                    put(conn, unique, expect_new=True)
                self.commits += 1
                return [None] * len(rows)
            except Exception as exc:
                if dialect.is_deadlock(exc) and attempt < DEADLOCK_RETRIES:
                    continue  # chosen as a deadlock victim: the same insert again
                if len(rows) == 1 or dialect.is_disconnect_or_unavailable(exc):
                    log.warning(
                        "inbox.commit_failed", extra={"error": _reason(exc), "rows": len(rows)}
                    )
                    return [exc] * len(rows)
                break
        # Something in the batch is bad: commit one by one so only it fails.
        return [self._commit([row])[0] for row in rows]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    return f"database error ({type(exc).__name__})"
