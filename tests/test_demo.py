"""`syncd demo --dir DIR` run again with the same DIR starts afresh, and
leaves no lock file behind; a database it did not make is never touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "syncd", "demo", "--orders", "30", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_second_demo_in_the_same_dir_starts_from_an_empty_database(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    first = demo(tmp_path, "--dir", str(directory))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "starting empty" not in first.stdout
    # Another seed too: its customers must not be added to the first run's.
    for seed in ("7", "11"):
        again = demo(tmp_path, "--dir", str(directory), "--seed", seed)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "OK: the database equals the store's truth" in again.stdout
        assert "previous demo's database there was removed: starting empty" in " ".join(
            again.stdout.split()
        )
        assert (directory / "syncd.db").is_file()
        assert sorted(p.name for p in directory.glob("*.lock")) == []


def test_the_demo_refuses_a_dir_holding_a_database_it_did_not_make(tmp_path: Path) -> None:
    directory = tmp_path / "mine"
    directory.mkdir()
    database = directory / "syncd.db"
    database.write_bytes(b"precious")
    result = demo(tmp_path, "--dir", str(directory))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"syncd: {database} exists and was not made by `syncd demo`; "
        "give --dir a new or empty directory"
    )
    assert database.read_bytes() == b"precious"


def test_without_dir_the_demo_says_its_database_is_temporary(tmp_path: Path) -> None:
    result = demo(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in a temporary directory, removed at exit (keep it with --dir DIR)" in " ".join(
        result.stdout.split()
    )
