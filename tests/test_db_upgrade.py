"""`syncd db upgrade` says which migrations it applied, or that there was nothing to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from syncd.db.engine import head_revision, migrations_dir, upgrade
from tests.support import run_syncd


def _revisions() -> list[str]:
    script = ScriptDirectory(str(migrations_dir()))
    return [step.revision for step in reversed(list(script.walk_revisions()))]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_db_upgrade_names_the_migrations_it_applied(
    kind: str, tmp_path: Path, fresh_database: Callable[[str], str]
) -> None:
    url = fresh_database(kind)
    revisions = _revisions()
    assert len(revisions) >= 2
    # Part of the way in code, the rest by the command: only the rest is named.
    upgrade(url, revisions[-2])
    first = run_syncd("db", "upgrade", env={"SYNCD_DATABASE_URL": url}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == "applied 1 migration(s):"
    assert lines[1].split()[0] == revisions[-1]
    assert lines[-1] == f"the database schema is at head ({head_revision()})"
    again = run_syncd("db", "upgrade", env={"SYNCD_DATABASE_URL": url}, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout == (
        f"nothing to do: the database schema is already at head ({head_revision()})\n"
    )


def test_db_upgrade_on_an_empty_database_lists_every_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = run_syncd("db", "upgrade", env={"SYNCD_DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    revisions = _revisions()
    assert lines[0] == f"applied {len(revisions)} migration(s):"
    assert [line.split()[0] for line in lines[1:-1]] == revisions
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines[1:-1])  # each has its message
