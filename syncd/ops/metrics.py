"""Prometheus metrics (prometheus-client), one registry per running app.

Labels are store names, event types, statuses and HTTP codes: never ids,
e-mail addresses, tokens or anything else taken from a payload but the type
(and a type is cut to a known shape before it becomes a label).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_TYPE_LABEL = re.compile(r"^[a-z0-9_]{1,32}\.[a-z0-9_]{1,32}$")


def type_label(event_type: str) -> str:
    """Event types come from outside: keep the label set small and clean."""
    return event_type if _TYPE_LABEL.match(event_type) else "other"


class _BacklogCollector(Collector):
    """Pending and failed counts, read from the database at scrape time."""

    def __init__(self, read: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "syncd_events_backlog",
            "Events by store and status (pending, failed, rejected)",
            labels=["store", "status"],
        )
        try:
            counts = self.read()
        except Exception:  # a scrape must not fail because the database is down
            counts = {}
        for (store, status), count in sorted(counts.items()):
            family.add_metric([store, status], count)
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
        self.commits = Counter(
            "syncd_inbox_commits", "Inbox transactions committed for webhooks", registry=r
        )
        self.up = Gauge("syncd_worker_running", "1 while the apply worker runs", registry=r)

    def watch_backlog(self, read: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.registry.register(_BacklogCollector(read))

    def api_hook(self, store: str) -> Callable[[str, int | str], None]:
        def hook(endpoint: str, status: int | str) -> None:
            self.api_calls.labels(store, endpoint, str(status)).inc()

        return hook

    def render(self) -> bytes:
        return generate_latest(self.registry)
