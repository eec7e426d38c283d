"""Reliability under faults (issue 8): nothing acknowledged is ever lost.

Each test runs syncd the way users do (``syncd serve`` in a subprocess, or
the app under uvicorn) against a simulated store over real HTTP, breaks
something on purpose, and then checks the two promises of docs/api.md §1 and docs/apply-rules.md:
every event answered 2xx is in ``events``, and once the platform's retries
and a reconcile are through, the normalized tables equal the store's truth
(``compare_with_truth`` returns no difference).

The figures each test saw are printed (``pytest -s`` shows them) so the
issue's note can quote them.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, select

from syncd.app import create_app
from syncd.config import load_settings
from syncd.db.models import Event, metadata
from syncd.reconcile import RunReport, exclusive, reconcile_store
from syncd.shoperti.client import ShopertiClient
from syncd.simulator import Faults, SimulatedStore
from syncd.state import EVENTS_CURSOR, read_state
from tests.support import (
    SyncdServe,
    TcpProxy,
    assert_equals_truth,
    event_counts,
    event_ids,
    free_port,
    serving,
    settled,
    syncd_env,
    wait_for,
)

pytestmark = pytest.mark.slow

KEY = "sk_test_reliability_5f8a2c"
SECRET = "whsec_reliability_7d41b9"
STORE = "default"


# --- helpers ----------------------------------------------------------------------------


def hook_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/webhooks/shoperti?token={SECRET}"


@pytest.fixture
def stores() -> Iterator[list[SimulatedStore]]:
    """Simulated stores started with :func:`start_store`; stopped after the test."""
    started: list[SimulatedStore] = []
    yield started
    for store in started:
        store.stop_thread()


def start_store(stores: list[SimulatedStore], **options: Any) -> SimulatedStore:
    store = SimulatedStore(api_key=KEY, **options)
    store.start_in_thread()
    stores.append(store)
    return store


def sell_in_background(store: SimulatedStore, orders: int, rate: float) -> threading.Thread:
    seller = threading.Thread(
        target=store.run, args=(store.sell(orders=orders, rate=rate), 120), daemon=True
    )
    seller.start()
    return seller


def reconcile_once(engine: Engine, url: str, api_url: str, **env: str) -> RunReport:
    """One reconcile pass in this process, applying what it finds."""
    settings = load_settings(
        {"SYNCD_DATABASE_URL": url, "SYNCD_API_URL": api_url, "SYNCD_API_KEY": KEY, **env}
    )

    async def run() -> RunReport:
        async with ShopertiClient(api_url, KEY, store=STORE) as client:
            return await reconcile_store(engine, settings, settings.store(), client, apply_now=True)

    return asyncio.run(run())


def serve_env(url: str, store: SimulatedStore, port: int, **extra: str) -> dict[str, str]:
    return syncd_env(
        url,
        SYNCD_PORT=str(port),
        SYNCD_API_URL=store.api_url,
        SYNCD_API_KEY=KEY,
        SYNCD_WEBHOOK_SECRET=SECRET,
        SYNCD_RECONCILE_INTERVAL="0",
        SYNCD_SHUTDOWN_GRACE="2",
        **extra,
    )


# --- 1. crash ------------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_during_a_burst_loses_nothing_acknowledged(
    db: Any, stores: list[SimulatedStore], tmp_path: Path
) -> None:
    port = free_port()
    # The platform's hour is half a second: 48 retries span 24 s.
    store = start_store(
        stores,
        seed=101,
        webhook_url=hook_url(port),
        time_scale=0.5 / 3600,
        faults=Faults(duplicate_rate=0.05, reorder_window=10),
        delivery_timeout=3,
    )
    first = reconcile_once(db.engine, db.url, store.api_url)  # sets the events cursor
    assert first.error is None, first.error
    daemon = SyncdServe(serve_env(db.url, store, port), tmp_path / "serve.log")
    checks: list[tuple[int, int]] = []
    try:
        daemon.start()
        seller = sell_in_background(store, orders=150, rate=250)
        for _ in range(3):
            before = len(store.delivered_event_ids)
            wait_for(
                lambda before=before: len(store.delivered_event_ids) >= before + 60,  # type: ignore[misc]
                timeout=30,
                message="deliveries to go on",
            )
            daemon.kill9()
            acknowledged = set(store.delivered_event_ids)  # no 2xx can come any more
            stored = event_ids(db.engine)
            assert acknowledged <= stored, f"acknowledged but lost: {acknowledged - stored}"
            checks.append((len(acknowledged), len(stored)))
            daemon.start()
            assert acknowledged <= event_ids(db.engine), "lost across the restart"
        seller.join(120)
        assert not seller.is_alive()
        store.run(store.wait_deliveries(timeout=60))
        report = reconcile_once(db.engine, db.url, store.api_url)
        assert report.error is None and report.mode == "events", report
        assert_equals_truth(db.engine, store)
        assert daemon.terminate() == 0
    finally:
        daemon.kill()
    sold = store.sold_event_ids
    acknowledged = set(store.delivered_event_ids)
    stored = event_ids(db.engine)
    assert acknowledged <= stored
    assert set(sold) <= stored
    stats = store.delivery_stats
    print(
        f"\n[crash {db.kind}] events sold {len(sold)}, acknowledged {len(acknowledged)}, "
        f"lost 0, after-kill checks (acked, stored) {checks}, answers {stats.answers}, "
        f"transport errors {stats.transport_errors}, retried {stats.retried}, "
        f"recovered by reconcile {report.found}, starts {daemon.starts}"
    )


# --- 2. database outage -----------------------------------------------------------------------


class Probe(threading.Thread):
    """Posts one real event again and again, noting (sent, answered, status) of each."""

    def __init__(self, url: str, body: bytes) -> None:
        super().__init__(name="webhook-probe", daemon=True)
        self.url, self.body = url, body
        self.answers: list[tuple[float, float, int]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stopping.is_set():
                sent = time.monotonic()
                try:
                    status = client.post(self.url, content=self.body).status_code
                except httpx.HTTPError:
                    status = 0
                self.answers.append((sent, time.monotonic(), status))
                self.stopping.wait(0.02)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_database_outage_answers_503_and_loses_nothing(
    db: Any, stores: list[SimulatedStore], tmp_path: Path
) -> None:
    """The outage is a cut of the TCP proxy between syncd and PostgreSQL."""
    port = free_port()
    store = start_store(
        stores,
        seed=202,
        webhook_url=hook_url(port),
        time_scale=0.5 / 3600,
        delivery_timeout=5,
    )
    assert reconcile_once(db.engine, db.url, store.api_url).error is None
    with TcpProxy("127.0.0.1", 5432) as proxy:
        daemon = SyncdServe(serve_env(proxy.url(db.url), store, port), tmp_path / "serve.log")
        probe: Probe | None = None
        try:
            daemon.start()
            seller = sell_in_background(store, orders=120, rate=120)
            wait_for(lambda: len(store.delivered_event_ids) >= 80, message="first deliveries")
            probe = Probe(hook_url(port), orjson.dumps(store.events[0]))
            probe.start()
            wait_for(lambda: len(probe.answers) >= 5, message="the probe to run")

            cut_at = time.monotonic()
            proxy.cut()
            ready = wait_for(
                lambda: httpx.get(f"{daemon.base_url}/readyz", timeout=10).status_code == 503,
                timeout=15,
                message="/readyz to say not ready",
            )
            assert ready
            wait_for(
                lambda: (
                    time.monotonic() - cut_at > 2.5
                    and sum(1 for s, _, _ in probe.answers if s > cut_at) >= 30
                ),
                timeout=15,
                message="answers during the outage",
            )
            assert daemon.running, "the daemon exited during the outage"
            assert httpx.get(f"{daemon.base_url}/healthz", timeout=10).status_code == 200
            metrics = httpx.get(f"{daemon.base_url}/metrics", timeout=10)
            assert metrics.status_code == 200
            assert "syncd_database_up 0.0" in metrics.text
            restored_at = time.monotonic()
            proxy.restore()

            wait_for(
                lambda: httpx.get(f"{daemon.base_url}/readyz", timeout=10).status_code == 200,
                timeout=20,
                message="/readyz to be ready again",
            )
            wait_for(
                lambda: any(s > restored_at and code == 200 for s, _, code in probe.answers),
                timeout=20,
                message="a 200 after the restore",
            )
            probe.stopping.set()
            probe.join(15)
            seller.join(120)
            assert not seller.is_alive()
            store.run(store.wait_deliveries(timeout=60))
            report = reconcile_once(db.engine, db.url, store.api_url)
            assert report.error is None, report.error
            assert_equals_truth(db.engine, store)
            assert daemon.running
        finally:
            if probe is not None:
                probe.stopping.set()
            daemon.kill()
    during = Counter(
        code for sent, answered, code in probe.answers if sent >= cut_at and answered <= restored_at
    )
    overall = Counter(code for _, _, code in probe.answers)
    assert during and set(during) == {503}, during
    assert set(overall) <= {200, 503}, overall
    stats = store.delivery_stats
    assert set(stats.answers) <= {200, 503}, stats.answers
    assert stats.answers.get(503, 0) > 0, "the burst never met the outage"
    acknowledged = set(store.delivered_event_ids)
    assert acknowledged <= event_ids(db.engine)
    print(
        f"\n[db outage] events sold {len(store.sold_event_ids)}, acknowledged "
        f"{len(acknowledged)}, lost 0, outage {restored_at - cut_at:.1f} s, probe answers "
        f"during the outage {dict(during)}, overall {dict(overall)}, platform answers "
        f"{stats.answers}, retried {stats.retried}, recovered by reconcile {report.found}, "
        f"connections reset by the proxy {proxy.refused}"
    )


# --- 3. API outage ----------------------------------------------------------------------------


def quick_client(api_url: str, **options: Any) -> ShopertiClient:
    """A client that gives up fast: the test's API outage lasts seconds, not minutes."""
    defaults: dict[str, Any] = {
        "timeout": 0.3,
        "connect_timeout": 0.3,
        "max_attempts": 2,
        "backoff_base": 0.02,
        "backoff_max": 0.05,
        "max_retry_after": 0.05,
        "store": STORE,
    }
    return ShopertiClient(api_url, KEY, **{**defaults, **options})


def reconcile_with(engine: Engine, settings: Any, client: ShopertiClient) -> RunReport:
    async def run() -> RunReport:
        async with client:
            return await reconcile_store(engine, settings, settings.store(), client)

    return asyncio.run(run())


OUTAGE = Faults(
    api_5xx_rate=0.4,
    api_429_rate=0.3,
    api_retry_after=0,
    api_slow_rate=1.0,  # the other 30 % time out
    api_slow_seconds=0.6,
)


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_api_outage_during_verification_and_reconcile(
    db: Any, stores: list[SimulatedStore]
) -> None:
    port = free_port()
    store = start_store(
        stores,
        seed=303,
        webhook_url=hook_url(port),
        time_scale=0.2 / 3600,
        faults=Faults(drop_rate=0.3),  # reconcile has work to do
    )
    settings = load_settings(
        {
            "SYNCD_DATABASE_URL": db.url,
            "SYNCD_API_URL": store.api_url,
            "SYNCD_API_KEY": KEY,
            "SYNCD_WEBHOOK_SECRET": SECRET,
        }
    )
    assert settings.store().verify == "api"
    assert reconcile_with(db.engine, settings, quick_client(store.api_url)).error is None
    cursor = read_state(db.engine, STORE, EVENTS_CURSOR)
    assert cursor is not None

    app = create_app(settings, db.engine, run_scheduler=False)
    daemon = app.state.daemon
    asyncio.run(daemon.clients[STORE].aclose())
    daemon.clients[STORE] = quick_client(
        store.api_url, max_attempts=1, on_response=daemon.metrics.api_hook(STORE)
    )
    store.set_api_faults(OUTAGE)
    with serving(app, port=port) as base:
        store.run(store.sell(orders=40))  # more than one page of events
        store.run(store.wait_deliveries(timeout=30))
        delivered = set(store.delivered_event_ids)
        assert delivered and delivered <= event_ids(db.engine)
        wait_for(
            lambda: event_ids(db.engine, attempts=0) == set(),
            timeout=30,
            message="every event to have met the outage once",
        )
        # Nothing unverified is applied, nothing is given up on or rejected.
        assert event_counts(db.engine) == {"pending": len(delivered)}
        during_outage = [
            reconcile_with(db.engine, settings, quick_client(store.api_url)) for _ in range(2)
        ]
        assert all(r.error for r in during_outage), during_outage
        assert read_state(db.engine, STORE, EVENTS_CURSOR) == cursor
        # A run that stores a first page, then meets the outage: the cursor stays.
        outage_after_first_page = Faults(api_5xx_rate=1.0)

        def fail_after_first_page(_: str, status: int | str) -> None:
            if status == 200:
                store.set_api_faults(outage_after_first_page)

        store.set_api_faults(Faults())
        partial = reconcile_with(
            db.engine, settings, quick_client(store.api_url, on_response=fail_after_first_page)
        )
        assert partial.error and partial.events_seen == 100, partial
        assert read_state(db.engine, STORE, EVENTS_CURSOR) == cursor
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert "syncd_worker_running 1.0" in metrics
        api_answers_during_outage = store.api_answers

        store.set_api_faults(Faults())
        report = reconcile_with(db.engine, settings, quick_client(store.api_url))
        assert report.error is None and report.mode == "events", report
        assert read_state(db.engine, STORE, EVENTS_CURSOR) != cursor
        assert_equals_truth(db.engine, store)
    sold = store.sold_event_ids
    lost = set(store.lost_event_ids)
    # Besides the snapshots of the first resource sync and of tie refreshes.
    assert set(sold) == event_ids(db.engine, snapshot=False)
    assert lost <= event_ids(db.engine, source="reconcile")
    print(
        f"\n[api outage {db.kind}] events sold {len(sold)}, delivered {len(delivered)}, "
        f"dropped {len(lost)}, recovered by reconcile {partial.found} (partial run) + "
        f"{report.found}, failed reconcile runs {len(during_outage) + 1}, API answers during "
        f"the outage {api_answers_during_outage}, events {event_counts(db.engine)}"
    )


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_an_api_outage_longer_than_the_verification_retries_loses_nothing(
    db: Any, stores: list[SimulatedStore]
) -> None:
    """SYNCD_MAX_ATTEMPTS=2 stands for the default 8: with backoff 2, 4, … 128 s,
    the 8th verification attempt comes ~4 minutes after the webhook, so any API
    outage longer than that does what this 3-second one does here."""
    port = free_port()
    store = start_store(stores, seed=304, webhook_url=hook_url(port), time_scale=0.2 / 3600)
    settings = load_settings(
        {
            "SYNCD_DATABASE_URL": db.url,
            "SYNCD_API_URL": store.api_url,
            "SYNCD_API_KEY": KEY,
            "SYNCD_WEBHOOK_SECRET": SECRET,
            "SYNCD_MAX_ATTEMPTS": "2",
        }
    )
    assert reconcile_with(db.engine, settings, quick_client(store.api_url)).error is None
    app = create_app(settings, db.engine, run_scheduler=False)
    daemon = app.state.daemon
    asyncio.run(daemon.clients[STORE].aclose())
    daemon.clients[STORE] = quick_client(store.api_url, max_attempts=1)
    store.set_api_faults(Faults(api_5xx_rate=1.0))
    with serving(app, port=port):
        store.run(store.sell(orders=10))
        store.run(store.wait_deliveries(timeout=30))
        sold = set(store.sold_event_ids)
        assert sold == set(store.delivered_event_ids) == event_ids(db.engine, snapshot=False)

        def attempts() -> list[int]:
            with db.engine.connect() as conn:
                return list(conn.scalars(select(Event.attempts)))

        # Past SYNCD_MAX_ATTEMPTS and still pending: an outage is not the
        # event's fault, so verification never gives up on it.
        wait_for(
            lambda: min(attempts()) >= 3,
            timeout=30,
            message="verification to retry past the attempt limit",
        )
        assert event_counts(db.engine) == {"pending": len(sold)}
        store.set_api_faults(Faults())  # the API is back
        wait_for(
            lambda: event_counts(db.engine).get("pending", 0) == 0,
            timeout=60,
            message="every event verified and applied once the API answers",
        )
        report = reconcile_with(db.engine, settings, quick_client(store.api_url))
        assert report.error is None and report.mode == "events" and report.found == 0
        print(f"\n[long api outage] {len(sold)} events waited out the outage; none lost")
        assert_equals_truth(db.engine, store)


# --- 4. long downtime -------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_daemon_down_past_the_retry_window_recovers_by_reconcile(
    db: Any, stores: list[SimulatedStore]
) -> None:
    port = free_port()
    # 48 hourly retries in ~2.4 s: the platform gives up while the daemon is off.
    store = start_store(
        stores, seed=404, webhook_url=hook_url(port), time_scale=0.05 / 3600, delivery_timeout=1
    )
    env = {
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_API_URL": store.api_url,
        "SYNCD_API_KEY": KEY,
        "SYNCD_WEBHOOK_SECRET": SECRET,
        "SYNCD_RECONCILE_INTERVAL": "3600",  # one run, at start-up
    }
    settings = load_settings(env)
    with serving(create_app(settings, db.engine), port=port):  # the daemon's last day up
        wait_for(lambda: read_state(db.engine, STORE, EVENTS_CURSOR), message="a first reconcile")
    # Off: every delivery fails until the platform gives up.
    store.run(store.sell(orders=15))  # 48 failed attempts per event cost CPU: keep it small
    store.run(store.wait_deliveries(timeout=30))
    sold = store.sold_event_ids
    stats = store.delivery_stats
    assert set(stats.gave_up) == set(sold) and not store.delivered_event_ids
    assert stats.retried == 48 * len(sold)
    with serving(create_app(settings, db.engine), port=port):  # back up
        wait_for(
            lambda: set(sold) <= event_ids(db.engine, source="reconcile"),
            timeout=30,
            message="reconcile to recover the missed events",
        )
        assert_equals_truth(db.engine, store)
    last_run = read_state(db.engine, STORE, "reconcile_last_run")
    assert last_run is not None and last_run["mode"] == "events"
    assert last_run["found"] == len(sold)
    print(
        f"\n[long downtime {db.kind}] events sold {len(sold)}, acknowledged 0, given up by "
        f"the platform {len(stats.gave_up)} after {stats.retried} retries, recovered by "
        f"reconcile {last_run['found']}, lost 0"
    )


@pytest.mark.parametrize("db", ["sqlite", "postgresql"], indirect=True)
def test_a_daemon_down_past_the_event_retention_recovers_by_resource_sync(
    db: Any, stores: list[SimulatedStore]
) -> None:
    port = free_port()
    store = start_store(
        stores,
        seed=405,
        webhook_url=hook_url(port),
        time_scale=0.05 / 3600,
        delivery_timeout=1,
        retention_seconds=2,  # the API forgets events after 2 s
    )
    env = {
        "SYNCD_DATABASE_URL": db.url,
        "SYNCD_API_URL": store.api_url,
        "SYNCD_API_KEY": KEY,
        "SYNCD_WEBHOOK_SECRET": SECRET,
        "SYNCD_RECONCILE_INTERVAL": "3600",
        "SYNCD_EVENT_RETENTION": "2",
        "SYNCD_RECONCILE_LOOKBACK": "1",
    }
    settings = load_settings(env)
    with serving(create_app(settings, db.engine), port=port):
        wait_for(lambda: read_state(db.engine, STORE, EVENTS_CURSOR), message="a first reconcile")
    first_run = read_state(db.engine, STORE, "reconcile_last_run")
    assert first_run is not None
    store.run(store.sell(orders=15))
    store.run(store.wait_deliveries(timeout=30))
    sold = store.sold_event_ids
    assert set(store.delivery_stats.gave_up) == set(sold)

    def events_listed() -> int:
        answer = httpx.get(
            f"{store.api_url}/events", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        )
        return int(answer.json()["meta"]["pagination"]["total"])

    wait_for(lambda: events_listed() == 0, timeout=10, message="the API to forget the events")
    with serving(create_app(settings, db.engine), port=port):
        wait_for(
            lambda: read_state(db.engine, STORE, "reconcile_last_run") != first_run,
            timeout=30,
            message="a reconcile run after the restart",
        )
        assert_equals_truth(db.engine, store)
    truth = store.truth()
    last_run = read_state(db.engine, STORE, "reconcile_last_run")
    assert last_run is not None and last_run["error"] is None
    assert last_run["mode"] == "resources", last_run
    assert event_ids(db.engine, source="reconcile") == set()
    assert event_ids(db.engine) & set(sold) == set()
    backfill = event_ids(db.engine, source="backfill")
    assert len(backfill) >= len(truth.orders) + len(truth.customers)
    print(
        f"\n[past retention {db.kind}] events sold {len(sold)}, acknowledged 0, listed by the "
        f"API at restart 0, recovered by resource sync {last_run['found']} versions "
        f"({len(truth.orders)} orders, {len(truth.customers)} customers), lost 0"
    )


# --- 5. two processes on one database ---------------------------------------------------------


def post_until_2xx(client: httpx.Client, url: str, body: bytes, tries: int = 5) -> int:
    """Post like the platform, retrying soon (its hour is a moment here)."""
    status = 0
    for _ in range(tries):
        try:
            status = client.post(url, content=body).status_code
        except httpx.HTTPError:
            status = 0
        if 200 <= status < 300:
            break
        time.sleep(0.2)
    return status


def metric_values(metrics_text: str, name: str, label: str) -> dict[str, float]:
    """``{label value: sample}`` of the samples of ``name`` (store 'default')."""
    values: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and 'store="default"' in line:
            match = re.search(rf'{label}="([^"]*)"', line)
            if match:
                values[match.group(1)] = values.get(match.group(1), 0) + float(line.split()[-1])
    return values


class LastRunWatcher(threading.Thread):
    """Reads ``reconcile_last_run`` every few milliseconds; keeps each distinct run."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="last-run-watcher", daemon=True)
        self.engine = engine
        self.runs: dict[str, dict[str, Any]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            last = read_state(self.engine, STORE, "reconcile_last_run")
            if last is not None:
                self.runs.setdefault(last["started_at"], last)
            self.stopping.wait(0.01)


class LockHolder(threading.Thread):
    """Holds the reconcile lock of the store (``syncd.reconcile.exclusive``), as a
    third process would, from :meth:`hold` until :meth:`release`."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="reconcile-lock-holder", daemon=True)
        self.engine = engine
        self.held = threading.Event()
        self.released = threading.Event()
        self.failure: BaseException | None = None
        self.held_at = 0.0

    def hold(self) -> None:
        self.start()
        assert self.held.wait(20), f"the reconcile lock was never free ({self.failure})"

    def release(self) -> None:
        self.released.set()
        self.join(10)

    def run(self) -> None:
        async def hold() -> None:
            for _ in range(200):
                async with exclusive(self.engine, f"reconcile:{STORE}") as got:
                    if got:
                        self.held_at = time.monotonic()
                        self.held.set()
                        await asyncio.to_thread(self.released.wait, 60)
                        return
                await asyncio.sleep(0.05)

        try:
            asyncio.run(hold())
        except BaseException as exc:  # handed to the test thread through hold()
            self.failure = exc


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_two_daemons_on_one_database_apply_each_event_once(
    db: Any, stores: list[SimulatedStore], tmp_path: Path
) -> None:
    store = start_store(stores, seed=505)  # the test delivers the webhooks itself
    assert reconcile_once(db.engine, db.url, store.api_url).error is None
    daemons = [
        SyncdServe(
            syncd_env(
                db.url,
                SYNCD_PORT=str(free_port()),
                SYNCD_API_URL=store.api_url,
                SYNCD_API_KEY=KEY,
                SYNCD_WEBHOOK_SECRET=SECRET,
                SYNCD_RECONCILE_INTERVAL="1",
                SYNCD_SHUTDOWN_GRACE="2",
            ),
            tmp_path / f"serve-{name}.log",
        )
        for name in "ab"
    ]
    watcher = LastRunWatcher(db.engine)
    lock = LockHolder(db.engine)
    try:
        for daemon in daemons:
            daemon.start()
        watcher.start()
        wait_for(lambda: len(watcher.runs) >= 3, timeout=15, message="scheduled reconciles")
        # While the test holds the lock, neither daemon may reconcile: the webhooks
        # alone carry the load, each to one daemon or to both at once.
        lock.hold()
        held_from = read_state(db.engine, STORE, "reconcile_last_run")
        store.run(store.sell(orders=60))
        events = store.events
        rng = random.Random(5)
        plan = [(event, rng.choice(([0], [1], [0, 1]))) for event in events]
        urls = [f"{d.base_url}/webhooks/shoperti?token={SECRET}" for d in daemons]
        jobs = [(orjson.dumps(event), target) for event, targets in plan for target in targets]
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda job: post_until_2xx(client, urls[job[1]], job[0]), jobs))
        wait_for(lambda: settled(db.engine), timeout=30, message="the daemons to apply")
        # Two intervals of both daemons at least, with the lock held.
        time.sleep(max(0.0, 2.5 - (time.monotonic() - lock.held_at)))
        assert read_state(db.engine, STORE, "reconcile_last_run") == held_from, (
            "a daemon reconciled while the test held the lock"
        )
        lock.release()
        runs_before = len(watcher.runs)
        wait_for(
            lambda: len(watcher.runs) >= runs_before + 4,
            timeout=15,
            message="reconcile to resume once the lock is free",
        )
        assert_equals_truth(db.engine, store)
        metrics = [httpx.get(f"{d.base_url}/metrics", timeout=5).text for d in daemons]
        watcher.stopping.set()
        watcher.join(5)
        for daemon in daemons:
            assert daemon.terminate() == 0
    finally:
        watcher.stopping.set()
        lock.released.set()
        for daemon in daemons:
            daemon.kill()
    assert set(answers) == {200}, Counter(answers)
    table = metadata.tables["events"]
    history = metadata.tables["order_status_history"]
    with db.engine.connect() as conn:
        everything = conn.execute(
            select(
                table.c.id,
                table.c.type,
                table.c.status,
                table.c.attempts,
                table.c.source,
                table.c.snapshot,
            )
        ).all()
        history_ids = list(conn.scalars(select(history.c.event_id)))
    # Besides the webhooks: the current copies reconcile fetched to settle
    # versions that same-second events could not (docs/apply-rules.md).
    refreshes = [row for row in everything if row.snapshot]
    assert {(row.source, row.status) for row in refreshes} <= {("reconcile", "applied")}
    rows = [row for row in everything if not row.snapshot]
    assert {event["id"] for event in events} == {row.id for row in rows}
    assert {row.source for row in rows} == {"webhook"}
    assert {row.attempts for row in everything} == {1}, Counter(row.attempts for row in rows)
    applied_order_events = {
        row.id for row in everything if row.status == "applied" and row.type.startswith("order.")
    }
    assert sorted(history_ids) == sorted(applied_order_events)
    runs = sorted(watcher.runs.values(), key=lambda run: run["started_at"])
    for earlier, later in itertools.pairwise(runs):
        assert earlier["finished_at"] <= later["started_at"], (earlier, later)
    per_daemon = [metric_values(text, "syncd_reconcile_runs_total", "outcome") for text in metrics]
    fetches = [
        metric_values(text, "syncd_api_calls_total", "endpoint").get("events.get", 0)
        for text in metrics
    ]
    both = sum(1 for _, targets in plan if len(targets) == 2)
    print(
        f"\n[two daemons] events {len(events)} (+ {len(refreshes)} refreshed copies), "
        f"posts {len(answers)} (to both daemons: {both}), "
        f"answers {dict(Counter(answers))}, lost 0, applied once each (attempts = 1), status "
        f"history rows {len(history_ids)} = applied order events, reconcile runs seen "
        f"{len(runs)} (none overlapping; none while the test held the lock), runs per daemon "
        f"{per_daemon}, verification fetches per daemon {fetches} for {len(events)} events"
    )
