"""The alert rules in deploy/prometheus, run by Prometheus's own promtool.

- ``promtool check rules``: the file loads;
- ``promtool test rules`` on deploy/prometheus/syncd-alerts.test.yml: each
  alert fires when it should (with its labels and rendered annotations) and
  stays silent when it should not; a copy of the rules with one threshold
  changed fails that test, so the test can fail;
- every alert is named ``Syncd…``, has a ``severity``, a summary, a
  description and a runbook_url whose section exists in docs/deploy.md, and
  appears in the test file.

promtool is in Debian's ``prometheus`` package (.ci/run installs it); without
it the tests skip, and under ``CI=true`` fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO

RULES = REPO / "deploy" / "prometheus" / "syncd-alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "syncd-alerts.test.yml"
GUIDE = REPO / "docs" / "deploy.md"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian package prometheus)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(f"!!! SKIPPED: {message}")
    return path


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def alerts() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of ``markdown``."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def test_rules_load_and_their_unit_tests_pass() -> None:
    tool = promtool()
    checked = run(tool, "check", "rules", str(RULES), cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout
    tested = run(tool, "test", "rules", RULE_TESTS.name, cwd=RULES.parent)
    print(tested.stdout + tested.stderr)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.parametrize(
    ("original", "changed", "failing_alert"),
    [
        ("syncd_events_oldest_pending_age_seconds) > 300", "…) > 600", "SyncdPendingEventsStale"),
        ('{status="failed"}) > 0', '{status="failed"}) > 5', "SyncdFailedEvents"),
        ("> 2 * max by (store)", "> 3 * max by (store)", "SyncdReconcileNotSucceeding"),
        ('up{job="syncd"} == 0 or absent(up{job="syncd"})', 'up{job="syncd"} == 0', "SyncdDown"),
    ],
)
def test_a_changed_rule_fails_its_unit_test(
    tmp_path: Path, original: str, changed: str, failing_alert: str
) -> None:
    tool = promtool()
    text = RULES.read_text()
    assert original in text
    changed = changed.replace("…", original.split(")")[0])
    (tmp_path / RULES.name).write_text(text.replace(original, changed))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = run(tool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode != 0, tested.stdout
    assert f"alertname: {failing_alert}" in tested.stdout + tested.stderr


def test_every_alert_is_named_labelled_annotated_documented_and_tested() -> None:
    rules = alerts()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) and len(names) >= 6
    guide = anchors(GUIDE.read_text())
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group["alert_rule_test"]
        if case["exp_alerts"]
    }
    for rule in rules:
        name = rule["alert"]
        assert name.startswith("Syncd"), name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/deploy.md" and anchor in guide, (name, anchor)
        assert name in tested, f"{name} is never shown firing in {RULE_TESTS.name}"
    # What the product promises to alert on, at least.
    for needed in (
        "SyncdDown",
        "SyncdDatabaseUnavailable",
        "SyncdReconcileNotSucceeding",
        "SyncdFailedEvents",
        "SyncdPendingEventsStale",
        "SyncdApiErrors",
        "SyncdApiRateLimited",
    ):
        assert needed in names
