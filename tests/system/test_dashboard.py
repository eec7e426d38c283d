"""The Grafana dashboard, and the metric names it and the alert rules use.

Every metric named by deploy/grafana/syncd-dashboard.json and by
deploy/prometheus/syncd-alerts.yml must have samples in the /metrics of a
really running ``syncd serve`` (a process, on SQLite, with the simulated
store's webhooks — some dropped, so reconcile finds them — and its API), so
neither can silently name a metric that does not exist or was renamed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from syncd.db.engine import upgrade
from syncd.simulator import Faults, SimulatedStore
from tests.support import REPO, free_port, syncd_serving, wait_for

DASHBOARD = REPO / "deploy" / "grafana" / "syncd-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "syncd-alerts.yml"
METRIC = re.compile(r"\bsyncd_[a-z0-9_]+\b")
TOKEN = "tok-dashboard-4417"
API_KEY = "sk_dashboard_9d1f"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_dashboard_uses_the_ds_prometheus_input_and_has_the_panels() -> None:
    board = dashboard()
    assert [entry["name"] for entry in board["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    titles = {panel["title"] for panel in board["panels"]}
    for wanted in (
        "Webhooks by answer",
        "Apply lag",
        "Backlog",
        "Reconcile runs and missed events",
        "API calls by status",
        "Database up",
    ):
        assert wanted in titles
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_every_metric_the_dashboard_and_rules_name_is_served(tmp_path: Path) -> None:
    wanted = set(METRIC.findall(" ".join(expressions()))) | set(METRIC.findall(RULES.read_text()))
    assert len(wanted) >= 10, wanted  # the extraction itself works

    url = f"sqlite:///{tmp_path / 'syncd.db'}"
    upgrade(url)
    port = free_port()
    store = SimulatedStore(
        seed=17,
        api_key=API_KEY,
        faults=Faults(drop_rate=0.4),  # lost for good: reconcile must find them
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shoperti?token={TOKEN}",
        max_retries=0,
    )
    api_url = store.start_in_thread()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "SYNCD_DATABASE_URL": url,
        "SYNCD_PORT": str(port),
        "SYNCD_WEBHOOK_SECRET": TOKEN,
        "SYNCD_API_URL": api_url,
        "SYNCD_API_KEY": API_KEY,
        "SYNCD_RECONCILE_INTERVAL": "1",
    }
    log_path = tmp_path / "serve.log"
    try:
        with syncd_serving(env, log_path, cwd=tmp_path) as daemon:

            def metrics() -> str | None:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
                except httpx.HTTPError:
                    assert daemon.running, log_path.read_text()[-2000:]
                    return None
                return answer.text if answer.status_code == 200 else None

            wait_for(metrics, timeout=30, message="syncd serve to answer /metrics")
            store.run(store.sell(orders=20), timeout=60)
            store.run(store.wait_deliveries(timeout=60), timeout=70)

            def served() -> set[str] | None:
                text = metrics()
                if text is None:
                    return None
                names = {
                    sample.name
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                }
                return names if wanted <= names else None

            names = wait_for(
                served,
                timeout=60,
                interval=0.5,
                message=f"samples of every one of {sorted(wanted)}",
            )
    finally:
        store.stop_thread()
    assert names is not None and wanted <= names
    assert daemon.returncode == 0, log_path.read_text()[-2000:]
