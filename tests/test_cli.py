"""The command line: one-line errors, schema guard, db commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support import REPO, run_syncd


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {"SYNCD_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}", "SYNCD_PORT": "0"}
    (tmp_path / "new.db").write_bytes(b"")  # an empty database (no schema yet)
    result = run_syncd("serve", env=env, cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("syncd: database schema is at nothing")
    assert "run `syncd db upgrade`" in last


def test_db_upgrade_then_dictionary_check(
    tmp_path: Path, fresh_database: Callable[[str], str]
) -> None:
    for kind in ("sqlite", "postgresql", "mariadb"):
        env = {"SYNCD_DATABASE_URL": fresh_database(kind)}
        result = run_syncd("db", "upgrade", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "at head" in result.stdout
        again = run_syncd("db", "upgrade", env=env, cwd=tmp_path)
        assert again.returncode == 0
    current = run_syncd(
        "db",
        "dictionary",
        "--check",
        str(REPO / "docs" / "data-dictionary.md"),
        env={},
        cwd=tmp_path,
    )
    assert current.returncode == 0, current.stderr
    stale = tmp_path / "old.md"
    stale.write_text("# old\n")
    result = run_syncd("db", "dictionary", "--check", str(stale), env={}, cwd=tmp_path)
    assert result.returncode == 1 and "out of date" in result.stderr


def test_unsupported_database_url_is_one_line(tmp_path: Path) -> None:
    result = run_syncd("status", env={"SYNCD_DATABASE_URL": "oracle://x/y"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "syncd: SYNCD_DATABASE_URL: unsupported database 'oracle': "
        "use sqlite, postgresql, mysql or mariadb"
    )
