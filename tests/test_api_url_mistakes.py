"""An api_url without its version path: the 404 names the URL to check.

Against the simulated store over real HTTP; its API lives under ``/v1``,
like the platform's, so a URL without it answers 404 on every listing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.db.engine import upgrade
from syncd.simulator import SimulatedStore
from tests.support import run_syncd

API_KEY = "sk_url_mistake_test"


@pytest.fixture
def api_root(tmp_path: Path) -> Iterator[str]:
    store = SimulatedStore(seed=2, api_key=API_KEY)
    api_url = store.start_in_thread()
    try:
        assert api_url.endswith("/v1")
        yield api_url.removesuffix("/v1")
    finally:
        store.stop_thread()


@pytest.mark.parametrize("command", ["backfill", "reconcile"])
def test_a_404_on_a_listing_names_the_url_and_api_url(
    tmp_path: Path, api_root: str, command: str
) -> None:
    url = f"sqlite:///{tmp_path / 'syncd.db'}"
    upgrade(url)
    env = {"SYNCD_DATABASE_URL": url, "SYNCD_API_URL": api_root, "SYNCD_API_KEY": API_KEY}
    result = run_syncd(command, env=env, cwd=tmp_path)
    assert result.returncode == 1
    text = result.stdout + result.stderr
    assert f"the Shoperti API answered 404 for {api_root}/customers" in text, text
    assert "check the store's api_url (SYNCD_API_URL" in text
    assert "ends in /v1" in text
    assert "unknown id" not in text
    assert API_KEY not in text
    assert "Traceback" not in text
