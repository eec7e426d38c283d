"""Prometheus metrics (prometheus-client), one registry per running app.

What moves: webhooks by store and answer code, events processed by store,
type and outcome, the apply lag (event ``created_at`` → applied), reconcile
runs and the events they found that webhooks had missed, API calls by
status; and, read from the database at scrape time, the backlog (pending,
failed, rejected), whether the database answered, the age of each store's
oldest pending event and the time of its last successful reconcile (so
several daemons sharing a database report the same facts). Also
``syncd_build_info{version}`` and, per store with reconciling on, its
interval (``syncd_reconcile_interval_seconds``), which the alert rules in
deploy/prometheus compare the last success with.

Labels are store names, event types, statuses and HTTP codes: never ids,
e-mail addresses, tokens or anything else taken from a payload but the type
(and a type is cut to a known shape before it becomes a label). A scrape
must never fail or hang on the database being down.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from syncd.vocabulary import BACKLOG

_TYPE_LABEL = re.compile(r"^[a-z0-9_]{1,32}\.[a-z0-9_]{1,32}$")


def type_label(event_type: str) -> str:
    """Event types come from outside: keep the label set small and clean."""
    return event_type if _TYPE_LABEL.match(event_type) else "other"


BACKLOG_STATUSES = BACKLOG


class _BacklogCollector(Collector):
    """Pending, failed and rejected counts, read from the database at scrape time.

    Every store seen once keeps a sample for each status (0 when empty), so a
    backlog that drains shows as 0 instead of vanishing from graphs.
    """

    def __init__(
        self, read: Callable[[], dict[tuple[str, str], int]], stores: Iterable[str] = ()
    ) -> None:
        self.read = read
        self.stores = set(stores)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "syncd_events_backlog",
            "Events by store and status (pending, failed, rejected), read at scrape time",
            labels=["store", "status"],
        )
        up = GaugeMetricFamily(
            "syncd_database_up", "1 when the database answered the last scrape's backlog query"
        )
        try:
            counts = self.read()
            up.add_metric([], 1)
        except Exception:  # a scrape must not fail because the database is down
            counts = {}
            up.add_metric([], 0)
        self.stores.update(store for store, _ in counts)
        for store in sorted(self.stores):
            for status in BACKLOG_STATUSES:
                family.add_metric([store, status], counts.get((store, status), 0))
        yield family
        yield up


@dataclass(frozen=True)
class Freshness:
    """Per store, read at scrape time: when its oldest pending event was
    received, and when its reconcile last succeeded (None: no such thing)."""

    oldest_pending_at: datetime | None
    last_reconcile_success_at: datetime | None


class _FreshnessCollector(Collector):
    """Oldest pending event age and last successful reconcile, per store.

    When the database does not answer, neither is reported (rather than a
    stale or made-up value); ``syncd_database_up`` says why.
    """

    def __init__(
        self,
        read: Callable[[], Mapping[str, Freshness]],
        now: Callable[[], datetime],
        intervals: Mapping[str, float],
    ) -> None:
        self.read = read
        self.now = now
        self.intervals = dict(intervals)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        age = GaugeMetricFamily(
            "syncd_events_oldest_pending_age_seconds",
            "Age of the store's oldest pending event (since it was received); 0 when none",
            labels=["store"],
        )
        success = GaugeMetricFamily(
            "syncd_reconcile_last_success_timestamp_seconds",
            "Unix time of the store's last successful reconcile run",
            labels=["store"],
        )
        interval = GaugeMetricFamily(
            "syncd_reconcile_interval_seconds",
            "How often the store is reconciled (only stores with reconciling on)",
            labels=["store"],
        )
        for store, seconds in sorted(self.intervals.items()):
            interval.add_metric([store], seconds)
        try:
            facts = self.read()
        except Exception:  # a scrape must not fail because the database is down
            facts = {}
        now = self.now()
        for store, fact in sorted(facts.items()):
            oldest = fact.oldest_pending_at
            age.add_metric([store], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
            if fact.last_reconcile_success_at is not None:
                success.add_metric([store], fact.last_reconcile_success_at.timestamp())
        yield age
        yield success
        yield interval


def version() -> str:
    try:
        return metadata.version("syncd")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


class _CommitsCollector(Collector):
    def __init__(self, read: Callable[[], int]) -> None:
        self.read = read

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "syncd_inbox_commits", "Inbox transactions committed for webhooks (group commits)"
        )
        family.add_metric([], self.read())
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.webhooks = Counter(
            "syncd_webhooks",
            "Webhook requests by store and answer code",
            ["store", "code"],
            registry=r,
        )
        self.events = Counter(
            "syncd_events_processed",
            "Events processed by store, type and outcome",
            ["store", "type", "status"],
            registry=r,
        )
        self.apply_lag = Histogram(
            "syncd_apply_lag_seconds",
            "From the event's created_at to its application",
            ["store"],
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400),
        )
        self.reconcile_runs = Counter(
            "syncd_reconcile_runs",
            "Reconcile runs by store and outcome",
            ["store", "outcome"],
            registry=r,
        )
        self.reconcile_found = Counter(
            "syncd_reconcile_missed_events",
            "Events found by reconcile or resource sync that webhooks had not delivered",
            ["store"],
            registry=r,
        )
        self.api_calls = Counter(
            "syncd_api_calls",
            "Shoperti API calls by store, endpoint and status",
            ["store", "endpoint", "status"],
            registry=r,
        )
        self.up = Gauge("syncd_worker_running", "1 while the apply worker runs", registry=r)
        Info("syncd_build", "The running syncd's version", registry=r).info({"version": version()})

    def watch_backlog(
        self, read: Callable[[], dict[tuple[str, str], int]], stores: Iterable[str] = ()
    ) -> None:
        """Report ``read()`` (``{(store, status): count}``) at each scrape;
        ``stores`` get a 0 sample even before their first event."""
        self.registry.register(_BacklogCollector(read, stores))

    def watch_freshness(
        self,
        read: Callable[[], Mapping[str, Freshness]],
        now: Callable[[], datetime],
        intervals: Mapping[str, float],
    ) -> None:
        """Report ``read()`` (per store: oldest pending, last reconcile success)
        at each scrape, and ``intervals`` (store -> reconcile interval)."""
        self.registry.register(_FreshnessCollector(read, now, intervals))

    def watch_commits(self, read: Callable[[], int]) -> None:
        """Report ``read()``, the inbox writer's count of committed transactions."""
        self.registry.register(_CommitsCollector(read))

    def api_hook(self, store: str) -> Callable[[str, int | str], None]:
        def hook(endpoint: str, status: int | str) -> None:
            self.api_calls.labels(store, endpoint, str(status)).inc()

        return hook

    def render(self) -> bytes:
        return generate_latest(self.registry)
