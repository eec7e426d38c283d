"""A database that cannot be used: every command says so in one line.

The real ``syncd`` command, run as a process, for each kind of mistake a
newcomer makes on each database kind: a database that does not exist, a
wrong port (or a server that is down), an unknown user, a missing SQLite
directory, a URL of the wrong shape. Each must end in exactly one line on
stderr starting ``syncd: ``, carrying the driver's cause and what to do,
never the password and never a traceback, with a non-zero exit status.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import IN_CI, MARIADB_ADMIN_URL, PG_ADMIN_URL
from tests.support import run_syncd

PASSWORD = "Sekr3t-pa55word"
COMMANDS = (
    ("db", "upgrade"),
    ("serve",),
    ("backfill",),
    ("reconcile",),
    ("replay",),
    ("status",),
)
# The API settings only let backfill and reconcile get as far as the database.
API = {"SYNCD_API_URL": "http://127.0.0.1:9/v1", "SYNCD_API_KEY": "sk_live_0123456789"}


def _server(admin_url: str) -> tuple[str, int]:
    parts = urlsplit(admin_url)
    return parts.hostname or "127.0.0.1", parts.port or 0


PG_HOST, PG_PORT = _server(PG_ADMIN_URL)
MARIA_HOST, MARIA_PORT = _server(MARIADB_ADMIN_URL)

CASES = {
    "postgresql-no-database": (
        f"postgresql://postgres:{PASSWORD}@{PG_HOST}:{PG_PORT}/syncd_no_such_db",
        'database "syncd_no_such_db" does not exist',
        "create it",
    ),
    "postgresql-wrong-port": (
        f"postgresql://postgres:{PASSWORD}@{PG_HOST}:1/syncd",
        "Connection refused",
        "check that it is running",
    ),
    "postgresql-unknown-user": (
        f"postgresql://syncd_no_such_user:{PASSWORD}@{PG_HOST}:{PG_PORT}/postgres",
        'role "syncd_no_such_user" does not exist',
        "check the user name and password",
    ),
    "mariadb-no-database": (
        f"mariadb://root:{PASSWORD}@{MARIA_HOST}:{MARIA_PORT}/syncd_no_such_db",
        # root has no password here: a wrong one is refused before the database
        # is looked up, so this case connects without one (see below).
        "Unknown database 'syncd_no_such_db'",
        "create it",
    ),
    "mariadb-wrong-port": (
        f"mariadb://root:{PASSWORD}@{MARIA_HOST}:1/syncd",
        "Can't connect",
        "check that it is running",
    ),
    "mariadb-unknown-user": (
        f"mariadb://syncd_no_such_user:{PASSWORD}@{MARIA_HOST}:{MARIA_PORT}/mysql",
        "Access denied for user 'syncd_no_such_user'",
        "check the user name and password",
    ),
    "sqlite-missing-directory": (
        "sqlite:///{tmp}/no/such/dir/syncd.db",
        "does not exist",
        "syncd db upgrade",  # serve & co.; db upgrade itself says mkdir -p (below)
    ),
}


def _one_line(result_stderr: str) -> str:
    lines = [line for line in result_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result_stderr
    assert "Traceback" not in result_stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_says_what_is_wrong_with_the_database_in_one_line(
    case: str, tmp_path: Path
) -> None:
    url, cause, todo = CASES[case]
    url = url.format(tmp=tmp_path)
    if case == "mariadb-no-database":
        url = url.replace(f":{PASSWORD}@", "@")
    if not IN_CI and case.startswith(("postgresql", "mariadb")) and not _reachable(case):
        pytest.skip(f"!!! SKIPPED: {case.split('-')[0]} test server unavailable")
    env = {"SYNCD_DATABASE_URL": url, "SYNCD_PORT": "0", **API}
    for command in COMMANDS:
        result = run_syncd(*command, env=env, cwd=tmp_path)
        where = f"{case}: syncd {' '.join(command)}"
        assert result.returncode == 1, (where, result.stderr)
        line = _one_line(result.stderr)
        assert line.startswith("syncd: "), (where, line)
        assert PASSWORD not in line, (where, line)
        if case == "sqlite-missing-directory" and command == ("db", "upgrade"):
            missing = tmp_path / "no" / "such" / "dir"
            assert f"the directory {missing} does not exist" in line, line
            assert f"mkdir -p {missing}" in line, line
            assert "unable to open database file" in line, line  # the driver's words
        else:
            assert cause in line, (where, line)
            assert todo in line, (where, line)
    if case == "sqlite-missing-directory":
        assert not (tmp_path / "no").exists()


def test_serve_before_db_upgrade_leaves_no_empty_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "new.db"
    env = {"SYNCD_DATABASE_URL": f"sqlite:///{database}", "SYNCD_PORT": "0"}
    for command in (("serve",), ("status",), ("replay",)):
        result = run_syncd(*command, env=env, cwd=tmp_path)
        assert result.returncode == 1
        line = _one_line(result.stderr)
        assert line == (
            f"syncd: the database file {database} does not exist yet: "
            "run `syncd db upgrade` to create it"
        )
    assert not database.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://syncd.db", "a SQLite URL has three slashes"),
        ("postgresql+psycopg2://postgres@127.0.0.1/x", "without '+psycopg2'"),
        ("mysql+mysqldb://root@127.0.0.1/x", "without '+mysqldb'"),
    ],
)
def test_a_url_of_the_wrong_shape_is_one_line_naming_the_variable(
    url: str, expected: str, tmp_path: Path
) -> None:
    for command in (("db", "upgrade"), ("serve",), ("status",)):
        result = run_syncd(*command, env={"SYNCD_DATABASE_URL": url}, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        line = _one_line(result.stderr)
        assert line.startswith("syncd: SYNCD_DATABASE_URL: "), line
        assert expected in line, line


def _reachable(case: str) -> bool:
    import socket

    host, port = (PG_HOST, PG_PORT) if case.startswith("postgresql") else (MARIA_HOST, MARIA_PORT)
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def test_the_password_is_masked_even_when_the_driver_repeats_it() -> None:
    from sqlalchemy.exc import OperationalError

    from syncd.db.failures import explain

    url = f"postgresql://syncd:{PASSWORD}@db.example:5432/syncd"
    driver = Exception(f"password authentication failed for {PASSWORD}")
    error = explain(OperationalError("connect", {}, driver), url)
    text = str(error)
    assert PASSWORD not in text
    assert "password authentication failed for ***" in text
    assert "check the user name and password in SYNCD_DATABASE_URL" in text
    assert os.linesep not in text


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_user_without_rights_is_told_so_by_db_upgrade(kind: str, tmp_path: Path) -> None:
    import uuid

    from sqlalchemy import create_engine, text

    from syncd.db import dialect

    if not IN_CI and not _reachable(kind):
        pytest.skip(f"!!! SKIPPED: {kind} test server unavailable")
    name = f"syncd_nopriv_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin_url = PG_ADMIN_URL if kind == "postgresql" else MARIADB_ADMIN_URL
    admin = create_engine(dialect.database_url(admin_url), isolation_level="AUTOCOMMIT")
    # PostgreSQL 15: nobody but the owner creates tables in public; MariaDB: SELECT only.
    if kind == "postgresql":
        setup = [f'CREATE ROLE "{name}" LOGIN', f'CREATE DATABASE "{name}"']
        teardown = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE "{name}"']
    else:
        setup = [
            f"CREATE DATABASE `{name}`",
            f"CREATE USER '{name}'@'%'",
            f"GRANT SELECT ON `{name}`.* TO '{name}'@'%'",
        ]
        teardown = [f"DROP DATABASE IF EXISTS `{name}`", f"DROP USER '{name}'@'%'"]
    with admin.connect() as conn:
        for statement in setup:
            conn.execute(text(statement))
    try:
        host, port = (PG_HOST, PG_PORT) if kind == "postgresql" else (MARIA_HOST, MARIA_PORT)
        raw = f"{kind}://{name}@{host}:{port}/{name}"
        result = run_syncd("db", "upgrade", env={"SYNCD_DATABASE_URL": raw}, cwd=tmp_path)
        assert result.returncode == 1
        line = _one_line(result.stderr)
        assert line.startswith("syncd: cannot use the database"), line
        assert "the user may not do this" in line, line
        assert ("permission denied" in line) or ("command denied" in line), line
        assert "run it as the database's owner" in line, line
        assert "LINE " not in line  # the statement psycopg quotes is not the cause
    finally:
        with admin.connect() as conn:
            for statement in teardown:
                conn.execute(text(statement))
        admin.dispose()
