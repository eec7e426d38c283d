"""Which stores a command works on without ``--store``: the same rule for
every command — all configured stores (those with an API, where the command
needs one), which for a single store is that store, whatever its name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from syncd.db.engine import make_engine, upgrade
from syncd.db.models import Order
from syncd.simulator import SimulatedStore
from tests.support import run_syncd

API_KEY = "sk_selection_test"


@pytest.fixture
def store() -> Iterator[SimulatedStore]:
    simulated = SimulatedStore(seed=5, api_key=API_KEY)
    simulated.start_in_thread()
    simulated.generate_history(orders=12, days=3)
    try:
        yield simulated
    finally:
        simulated.stop_thread()


def _config(tmp_path: Path, api_url: str, *names: str) -> dict[str, str]:
    toml = tmp_path / "stores.toml"
    toml.write_text(
        "".join(
            f'[[stores]]\nname = "{name}"\napi_url = "{api_url}"\napi_key = "{API_KEY}"\n'
            for name in names
        ),
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'syncd.db'}"
    upgrade(url)
    return {"SYNCD_DATABASE_URL": url, "SYNCD_CONFIG": str(toml)}


def _orders(env: dict[str, str]) -> dict[str, int]:
    engine = make_engine(env["SYNCD_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Order.store, func.count()).group_by(Order.store)).all()
    finally:
        engine.dispose()
    return {row[0]: int(row[1]) for row in rows}


@pytest.mark.parametrize("names", [("shop",), ("norte", "sur")])
def test_every_command_without_store_covers_all_stores(
    tmp_path: Path, store: SimulatedStore, names: tuple[str, ...]
) -> None:
    env = _config(tmp_path, store.api_url, *names)
    backfill = run_syncd("backfill", env=env, cwd=tmp_path)
    assert backfill.returncode == 0, backfill.stderr
    for name in names:
        assert f"{name}: backfill done" in backfill.stdout, backfill.stdout
    assert _orders(env) == dict.fromkeys(names, 12)
    for command in ("reconcile", "replay", "status"):
        result = run_syncd(command, env=env, cwd=tmp_path)
        assert result.returncode == 0, (command, result.stderr)
        for name in names:
            assert name in result.stdout, (command, result.stdout)
    # --store still picks one, and an unknown name is one line listing the known ones.
    one = run_syncd("backfill", "--store", names[-1], env=env, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    done = [line.split(":")[0] for line in one.stdout.splitlines() if "backfill done" in line]
    assert done == [names[-1]]
    unknown = run_syncd("backfill", "--store", "default", env=env, cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        f"syncd: --store: unknown store 'default' (configured: {', '.join(sorted(names))})"
    )
