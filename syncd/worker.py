"""The worker: claim pending events, verify them, apply them, mark them.

Two steps per store, each its own transaction so no network call happens
while rows are locked:

1. verify (``api`` mode only): fetch each pending, unverified event from the
   API concurrently (bounded); the API's copy replaces the posted body; an
   id the API does not know, or a copy about another type or resource, is
   ``rejected`` and never applied; a transient failure is retried later.
2. apply: under the store's apply lock, claim a batch of ready events
   (``FOR UPDATE SKIP LOCKED``), write them through :mod:`syncd.apply`, mark
   them ``applied``, ``ignored`` or ``failed``. One bad event fails alone;
   a failing write is retried with backoff, then left ``failed``.

The worker wakes as soon as the receiver commits (``wake()``) and polls
as a fallback. Database errors never stop it: it waits and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Engine, Table, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import StatementError

from syncd import apply, inbox, localtime
from syncd.config import Settings, StoreConfig
from syncd.db import dialect
from syncd.db.models import Event as EventRow
from syncd.errors import ApiError, ApiNotFound, WireError
from syncd.inbox import utcnow
from syncd.ops.metrics import Metrics, type_label
from syncd.shoperti import wire
from syncd.shoperti.client import ShopertiClient
from syncd.vocabulary import EventSource, EventStatus, VerifyMode

log = logging.getLogger("syncd.worker")
events: Table = EventRow.__table__  # type: ignore[assignment]


def retry_delay(attempts: int) -> timedelta:
    """Backoff before attempt ``attempts + 1``: 2 s, 4 s, … capped at 15 min."""
    return timedelta(seconds=min(2.0 ** max(attempts, 1), 900.0))


@dataclass
class Report:
    applied: int = 0
    ignored: int = 0
    failed: int = 0
    retried: int = 0
    rejected: int = 0
    lags: list[float] = field(default_factory=list)
    by_type: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    @property
    def claimed(self) -> int:
        return self.applied + self.ignored + self.failed + self.retried


# --- apply step (runs in a thread) ----------------------------------------------------


def apply_pending(engine: Engine, store: StoreConfig, *, limit: int, max_attempts: int) -> Report:
    """Apply one batch of ready events of ``store``; returns what happened."""
    report = Report()
    now = utcnow()
    with engine.connect() as conn, dialect.transaction_lock(conn, f"apply:{store.name}"):
        rows = conn.execute(inbox.claim(store, now, limit)).all()
        if not rows:
            conn.commit()
            return report
        stored = [apply.StoredEvent(row.id, row.type, row.payload, row.snapshot) for row in rows]
        localtime.ensure_zone(conn, store.name, store.timezone)
        outcomes = write_isolated(conn, store, stored, now)
        _mark(conn, store.name, rows, outcomes, now, max_attempts, report)
        conn.commit()
    return report


def add_and_apply(
    engine: Engine,
    store: StoreConfig,
    payloads: Sequence[Mapping[str, Any]],
    *,
    source: EventSource,
    snapshot: bool = True,
    also: Callable[[Connection, inbox.Added], None] | None = None,
) -> inbox.Added:
    """Put events read from the API into the inbox and apply them, in one
    transaction under the store's apply lock (backfill and resource sync:
    ``snapshot``, copies of orders and customers syncd read).

    The same rules and writes as :func:`apply_pending`; only the round trip
    through the inbox is saved (:func:`syncd.inbox.ingest`). An event whose
    write fails for a database reason goes in pending, for the worker to
    retry. ``also`` runs in the same transaction (a page checkpoint).
    """
    return inbox.ingest(
        engine,
        store.name,
        payloads,
        source=source,
        snapshot=snapshot,
        apply_at_once=ApplyNow(store),
        also=also,
    )


class ApplyStep(Protocol):
    """Where events are applied. Everything that applies goes through one:
    the worker's batches of pending events, and reconcile's, backfill's and
    audit's events applied as they are stored. :class:`InThread` here, or
    (``syncd serve``) :class:`syncd.worker_process.ApplyProcess`, so that
    applying never takes the receiver's interpreter lock."""

    @property
    def batch_size(self) -> int:
        """How many events :meth:`pending` applies at most."""
        ...

    async def pending(self, store: StoreConfig) -> Report:
        """Apply one batch of ``store``'s ready events (:func:`apply_pending`)."""
        ...

    async def add(
        self,
        store: StoreConfig,
        payloads: Sequence[Mapping[str, Any]],
        *,
        source: EventSource,
        also: Callable[[Connection, inbox.Added], None] | None = None,
    ) -> inbox.Added:
        """Store events read from the API and apply them (:func:`add_and_apply`).
        ``also`` must pickle (a module-level dataclass, not a closure): it may
        run in another process."""
        ...


async def drain(step: ApplyStep, store: StoreConfig) -> None:
    """Apply ``store``'s pending events, batch after batch, until none is left."""
    while (await step.pending(store)).claimed >= step.batch_size:
        pass


@dataclass(frozen=True)
class InThread:
    """The apply step in a thread of this process (every command but ``serve``)."""

    engine: Engine
    batch_size: int
    max_attempts: int

    async def pending(self, store: StoreConfig) -> Report:
        return await asyncio.to_thread(
            apply_pending, self.engine, store, limit=self.batch_size, max_attempts=self.max_attempts
        )

    async def add(
        self,
        store: StoreConfig,
        payloads: Sequence[Mapping[str, Any]],
        *,
        source: EventSource,
        also: Callable[[Connection, inbox.Added], None] | None = None,
    ) -> inbox.Added:
        return await asyncio.to_thread(
            add_and_apply, self.engine, store, payloads, source=source, also=also
        )


@dataclass(frozen=True)
class ApplyNow:
    """The apply step inside :func:`syncd.inbox.ingest`'s transaction."""

    store: StoreConfig

    def lock(self, conn: Connection) -> contextlib.AbstractContextManager[object]:
        return dialect.transaction_lock(conn, f"apply:{self.store.name}")

    def __call__(
        self, conn: Connection, events: Sequence[wire.Event], rows: list[dict[str, Any]]
    ) -> None:
        store, now = self.store, rows[0]["received_at"] if rows else utcnow()
        stored = [
            apply.StoredEvent(event.id, event.type, event.payload, row["snapshot"])
            for event, row in zip(events, rows, strict=True)
            if event.unstorable is None
        ]
        localtime.ensure_zone(conn, store.name, store.timezone)
        outcomes = write_isolated(conn, store, stored, now)
        for event, row in zip(events, rows, strict=True):
            if event.unstorable is not None:
                continue  # failed already, with the reason
            outcome = outcomes[event.id]
            row.update(attempts=1, last_error=outcome.error)
            if outcome.status == apply.RETRY:
                row["next_attempt_at"] = now + retry_delay(1)
            else:
                row.update(status=outcome.status, processed_at=now)
                if outcome.status == EventStatus.FAILED:
                    gave_up(store.name, event.id, event.type, outcome.status, outcome.error)


def write_isolated(
    conn: Connection, config: StoreConfig, stored: Sequence[apply.StoredEvent], now: datetime
) -> dict[str, apply.Outcome]:
    """Write the batch at once; if that fails, event by event, so one event's
    database error does not hold back the others."""
    store, timezone = config.name, config.timezone
    batch, outcomes = apply.collect(store, stored)
    try:
        with conn.begin_nested():
            apply.write(conn, batch, now, timezone)
        return outcomes
    except Exception as exc:
        if dialect.is_disconnect_or_unavailable(exc):
            raise
        log.warning("apply.batch_failed", extra={"store": store, "error": type(exc).__name__})
    for event in stored:
        if outcomes[event.id].status != EventStatus.APPLIED:
            continue
        single, _ = apply.collect(store, [event])
        try:
            with conn.begin_nested():
                apply.write(conn, single, now, timezone)
        except Exception as exc:
            if dialect.is_disconnect_or_unavailable(exc):
                raise
            if isinstance(exc, StatementError) and isinstance(exc.orig, ValueError):
                # A value our own column types refuse: no retry will change it.
                outcomes[event.id] = apply.Outcome(EventStatus.FAILED, str(exc.orig))
            else:
                outcomes[event.id] = apply.Outcome(apply.RETRY, f"database error: {_short(exc)}")
    return outcomes


def gave_up(
    store: str, event_id: str, event_type: str, status: EventStatus, reason: str | None
) -> None:
    """One WARNING line per event that ended failed or rejected: its id, type
    and reason, never its payload (the log formatter masks e-mail addresses
    in the reason too)."""
    log.warning(
        "event." + status,
        extra={
            "store": store,
            "event_id": event_id,
            "event_type": event_type,
            "reason": (reason or "")[:300],
        },
    )


def _short(exc: BaseException) -> str:
    # The DBAPI's first line names the problem; parameters (customer data) follow it.
    first = str(getattr(exc, "orig", exc)).splitlines()[0] if str(exc) else type(exc).__name__
    return first[:200]


def _mark(
    conn: Connection,
    store: str,
    rows: Sequence[Any],
    outcomes: Mapping[str, apply.Outcome],
    now: datetime,
    max_attempts: int,
    report: Report,
) -> None:
    """Write each claimed event's outcome: a final status (one UPDATE per
    status and error), or another attempt later with backoff."""
    groups: dict[tuple[str, str | None], list[str]] = defaultdict(list)
    for row in rows:
        outcome = outcomes[row.id]
        attempts = row.attempts + 1
        if outcome.status != apply.RETRY:
            status = EventStatus(outcome.status)
        elif attempts >= max_attempts:
            status = EventStatus.FAILED
        else:
            _retry_later(conn, store, row.id, attempts, outcome.error, now)
            report.retried += 1
            continue
        groups[(status, outcome.error)].append(row.id)
        _count(report, store, row, status, outcome.error, now)
    set_outcomes(
        conn,
        store,
        groups,
        processed_at=now,
        attempts=events.c.attempts + 1,
        next_attempt_at=None,
    )


def _retry_later(
    conn: Connection, store: str, event_id: str, attempts: int, error: str | None, now: datetime
) -> None:
    conn.execute(
        update(events)
        .where(events.c.store == store, events.c.id == event_id)
        .values(attempts=attempts, last_error=error, next_attempt_at=now + retry_delay(attempts))
    )


def _count(
    report: Report, store: str, row: Any, status: EventStatus, error: str | None, now: datetime
) -> None:
    """Count an event that reached ``status`` (and log one that ended badly)."""
    report.by_type[(type_label(row.type), status)] += 1
    if status == EventStatus.APPLIED:
        report.applied += 1
        if row.created_at is not None:
            report.lags.append(max((now - row.created_at).total_seconds(), 0.0))
    elif status == EventStatus.IGNORED:
        report.ignored += 1
    else:
        report.failed += 1
        gave_up(store, row.id, row.type, status, error)


def set_outcomes(
    conn: Connection,
    store: str,
    groups: Mapping[tuple[str, str | None], list[str]],
    **values: Any,
) -> None:
    """One UPDATE per (status, error) group of event ids (and per 500 ids
    where IN lists are used)."""
    for (status, error), ids in groups.items():
        for ids_in in dialect.key_in(conn, events.c.id, ids):
            conn.execute(
                update(events)
                .where(events.c.store == store, ids_in)
                .values(status=status, last_error=error, **values)
            )


# --- verify step ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """The API's copy of the event, to be applied in place of the posted body
    (``event``: the copy, parsed)."""

    event_id: str
    copy: dict[str, Any]
    event: wire.Event


@dataclass(frozen=True)
class Rejected:
    """The event must never be applied; ``reason`` says why."""

    event_id: str
    reason: str


@dataclass(frozen=True)
class VerifyLater:
    """Verification did not happen (the API is down or slow): try again later."""

    event_id: str
    reason: str


Verdict = Verified | Rejected | VerifyLater


class Unverified(NamedTuple):
    id: str
    type: str
    payload: dict[str, Any]
    attempts: int


def unverified(engine: Engine, store: str, limit: int) -> list[Unverified]:
    """Pending events of ``store`` whose verification is due, oldest first."""
    now = utcnow()
    with dialect.reading(engine) as conn:
        rows = conn.execute(
            select(events.c.id, events.c.type, events.c.payload, events.c.attempts)
            .where(
                events.c.store == store,
                events.c.status == EventStatus.PENDING,
                events.c.verified.is_(False),
                or_(events.c.next_attempt_at.is_(None), events.c.next_attempt_at <= now),
            )
            .order_by(events.c.received_at)
            .limit(limit)
        ).all()
        conn.commit()
    return [Unverified(row.id, row.type, row.payload, row.attempts) for row in rows]


async def verify_one(client: ShopertiClient, event_id: str, posted: Mapping[str, Any]) -> Verdict:
    try:
        copy = await client.get_event(event_id)
    except ApiNotFound:
        return Rejected(event_id, "the API does not know this event id")
    except ApiError as exc:
        return VerifyLater(event_id, f"verification failed: {exc}")
    copy, unstorable = wire.prepare(copy)  # as the inbox stores it, so ids compare alike
    if unstorable is not None:
        return Rejected(event_id, f"the API's copy cannot be stored: {unstorable}")
    try:
        theirs = wire.parse_event(copy)
    except WireError as exc:
        return Rejected(event_id, f"the API's copy is malformed: {exc}")
    # The posted body only needs an envelope: its other fields are what the
    # API's copy replaces.
    ours = wire.parse_envelope(posted)
    if theirs.id != event_id:
        return Rejected(event_id, "the API answered with another event id")
    resource_differs = ours.resource_id is not None and theirs.resource_id != ours.resource_id
    if theirs.type != ours.type or resource_differs:
        return Rejected(
            event_id, "the posted event differs from the API's copy (type or resource id)"
        )
    return Verified(event_id, copy, theirs)


def record_verdicts(
    engine: Engine,
    store: str,
    verdicts: Sequence[Verdict],
    attempts: Mapping[str, int],
    types: Mapping[str, str] | None = None,
) -> Report:
    """Write the verdicts; ``types`` (event id → type) names rejected events in the log."""
    types = types or {}
    report = Report()
    now = utcnow()
    with engine.begin() as conn:
        for verdict in verdicts:
            conn.execute(
                update(events)
                .where(
                    events.c.store == store,
                    events.c.id == verdict.event_id,
                    events.c.status == EventStatus.PENDING,
                )
                .values(_verdict_values(verdict, attempts, now))
            )
            if isinstance(verdict, Rejected):
                report.rejected += 1
                event_type = types.get(verdict.event_id, "?")
                gave_up(store, verdict.event_id, event_type, EventStatus.REJECTED, verdict.reason)
            elif isinstance(verdict, VerifyLater):
                report.retried += 1
    return report


def _verdict_values(verdict: Verdict, attempts: Mapping[str, int], now: datetime) -> dict[str, Any]:
    """The columns a verdict changes in its pending event's row."""
    if isinstance(verdict, Verified):
        event = verdict.event  # parsed once, by verify_one
        return {
            "payload": verdict.copy,
            "verified": True,
            "type": event.type,
            "resource": event.resource,
            "resource_id": event.resource_id,
            "created_at": event.created_at,
        }
    if isinstance(verdict, Rejected):
        return {
            "status": EventStatus.REJECTED,
            "last_error": verdict.reason,
            "processed_at": now,
            "attempts": events.c.attempts + 1,
        }
    # The API is down or slow: not the event's fault. It stays pending
    # (backoff capped at 15 min) for as long as the outage lasts; giving up
    # would lose it, since reconcile skips known ids.
    tries = attempts.get(verdict.event_id, 0) + 1
    return {
        "attempts": tries,
        "last_error": verdict.reason,
        "next_attempt_at": now + retry_delay(tries),
    }


# --- the loop ---------------------------------------------------------------------------


class Worker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        clients: Mapping[str, ShopertiClient],
        metrics: Metrics | None = None,
        apply_step: ApplyStep | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clients = clients
        self.metrics = metrics
        # Where a batch is applied: a thread of this process unless told
        # otherwise (``syncd serve`` uses a child process, syncd.worker_process).
        self.apply_step = apply_step or InThread(
            engine, settings.worker_batch_size, settings.max_attempts
        )
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(settings.verify_concurrency)

    def wake(self) -> None:
        self._wake.set()

    @property
    def crashed(self) -> bool:
        """Started, and its loop ended without being told to stop."""
        return self._task is not None and self._task.done() and not self._stopping

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="syncd-worker")

    async def stop(self) -> None:
        """Finish the batch in hand, then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        if self.metrics:
            self.metrics.up.set(1)
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                done = await self.run_once()
                failures = 0
            except Exception as exc:
                failures += 1
                log.warning("worker.error", extra={"error": _short(exc), "failures": failures})
                done = 0
            if self._stopping:
                break
            if done == 0:
                pause = self.settings.worker_poll_interval * min(failures + 1, 10)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), pause)
            elif done < self.settings.worker_batch_size:
                # Events are trickling in: let a batch gather instead of paying a
                # transaction's fixed cost for every one or two events.
                await asyncio.sleep(self.settings.worker_linger)
        if self.metrics:
            self.metrics.up.set(0)

    async def run_once(self) -> int:
        """One pass over every store; returns how many events it moved."""
        moved = 0
        for store in self.settings.stores.values():
            if self._stopping:
                break
            client = self.clients.get(store.name)
            if store.verify == VerifyMode.API and client is not None:
                moved += await self.verify(store, client)
            report = await self.apply_step.pending(store)
            self._observe(store.name, report)
            moved += report.claimed
        return moved

    async def verify(self, store: StoreConfig, client: ShopertiClient) -> int:
        pending = await asyncio.to_thread(
            unverified, self.engine, store.name, self.settings.worker_batch_size
        )
        if not pending:
            return 0

        async def bounded(event_id: str, payload: dict[str, Any]) -> Verdict:
            async with self._limit:
                return await verify_one(client, event_id, payload)

        verdicts = await asyncio.gather(*(bounded(e.id, e.payload) for e in pending))
        attempts = {e.id: e.attempts for e in pending}
        types = {e.id: e.type for e in pending}
        report = await asyncio.to_thread(
            record_verdicts,
            self.engine,
            store.name,
            verdicts,
            attempts,
            types,
        )
        if self.metrics and report.rejected:
            self.metrics.events.labels(store.name, "any", EventStatus.REJECTED).inc(report.rejected)
        return len(verdicts)

    def _observe(self, store: str, report: Report) -> None:
        if self.metrics is None:
            return
        for (event_type, status), count in report.by_type.items():
            self.metrics.events.labels(store, event_type, status).inc(count)
        for lag in report.lags:
            self.metrics.apply_lag.labels(store).observe(lag)
