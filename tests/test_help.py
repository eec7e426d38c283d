"""What a newcomer finds in --help: every command and option explained, the
settings' source, status's exit codes, defaults, and --version."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from syncd.simulator.cli import build_parser
from tests.support import run_syncd


def _help(*args: str, tmp_path: Path) -> str:
    result = run_syncd(*args, "--help", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return " ".join(result.stdout.split())  # argparse wraps lines


def test_version(tmp_path: Path) -> None:
    result = run_syncd("--version", env={}, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"syncd {version('syncd')}"


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ((), "Keep a SQL database in step"),
        (("serve",), "Receive webhooks on http://SYNCD_HOST:SYNCD_PORT/webhooks/shoperti"),
        (("db", "upgrade"), "prints the migrations applied"),
        (("reconcile",), "Ask the API for the events webhooks missed"),
        (("backfill",), "resumable"),
        (("replay",), "Rebuild the normalized tables from events"),
        (("status",), "last event received and applied"),
        (("demo",), "Needs no settings"),
    ],
)
def test_every_command_explains_itself_and_names_the_settings(
    command: tuple[str, ...], words: str, tmp_path: Path
) -> None:
    text = _help(*command, tmp_path=tmp_path)
    assert words in text
    assert "syncd reads its settings from SYNCD_* environment variables" in text
    assert "SYNCD_DATABASE_URL" in text and "README.md lists them all" in text


def test_status_help_gives_its_exit_codes(tmp_path: Path) -> None:
    text = _help("status", tmp_path=tmp_path)
    assert "exit status: 0 all is well 1 something needs an operator" in text
    assert "2 invalid settings" in text


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_every_simulator_option_has_help_and_shows_its_default(tmp_path: Path) -> None:
    parser = build_parser()
    missing = [a.option_strings[0] for a in _options(parser) if not a.help]
    assert missing == []
    text = _help("simulator", tmp_path=tmp_path)
    assert "--api-key API_KEY the key syncd must send (SYNCD_API_KEY) (default: sk_test)" in text
    assert "--orders ORDERS orders to sell (with webhooks) (default: 100)" in text
    assert "--rate RATE events per second, 0 = no limit (default: 0.0)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_bench_help_is_plain_text_with_every_option_explained(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "bench", "--help"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "``" not in text and "**" not in text
    for option, words in [
        ("--events EVENTS", "events to POST per concurrency for the acks (default: 10000)"),
        (
            "--concurrency CONCURRENCY",
            "requests in flight during the acks: one run per value, comma-separated "
            "(default: 32,128)",
        ),
        ("--rate RATE", "events/s of the fixed-rate latency run (default: 300.0)"),
        ("--seed SEED", "random seed of the simulated store (default: 3)"),
        ("--skip-acks", "skip the ack and latency runs"),
        ("--skip-backfill", "skip the backfill run"),
    ]:
        assert f"{option} {words}" in text, option


def test_the_simulator_prints_what_syncd_needs_to_reach_it(tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    hook = "http://127.0.0.1:9/webhooks/shoperti?token=rehearsal"
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "simulator", "--orders", "0", "--exit-after-selling",
         "--api-key", "sk_rehearsal", "--webhook-url", hook],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    api_url = lines[0].removeprefix("api_url=")
    assert api_url.startswith("http://127.0.0.1:") and api_url.endswith("/v1")
    assert lines[1:5] == [
        "api_key=sk_rehearsal",
        f"webhook_url={hook}",
        f"point syncd at it: SYNCD_API_URL={api_url} SYNCD_API_KEY=sk_rehearsal",
        f"webhooks go to {hook} (syncd serve needs SYNCD_WEBHOOK_SECRET=rehearsal)",
    ]
