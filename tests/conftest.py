"""Test databases: SQLite, PostgreSQL and MariaDB through one parametrized fixture.

Each pytest process creates its own databases (named after its pid, so
parallel runs on one machine don't collide), migrates them once, and empties
the tables before each test. With ``CI=true`` a server that does not answer
fails the test; elsewhere it is skipped with the reason.

Besides: ``captured_logs`` (syncd's own log lines, in a buffer) and
``notify_socket`` (a stand-in for systemd's $NOTIFY_SOCKET).
"""

from __future__ import annotations

import io
import logging
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from syncd.db import dialect
from syncd.db.engine import make_engine, upgrade
from syncd.db.models import metadata
from syncd.ops import logs

KINDS = ("sqlite", "postgresql", "mariadb")
PG_ADMIN_URL = os.environ.get(
    "SYNCD_TEST_POSTGRESQL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("SYNCD_TEST_MARIADB", "mariadb://root@127.0.0.1:3306/")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class TestDatabase:
    """One migrated database of one kind, shared by the tests of a session."""

    __test__ = False

    kind: str
    url: str
    engine: Engine = field(repr=False)

    def reset(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())


class DatabaseServers:
    """Creates and drops databases on the local servers."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.created: list[tuple[str, str]] = []
        self.unavailable: dict[str, str] = {}

    def _admin(self, kind: str) -> Engine:
        raw = PG_ADMIN_URL if kind == "postgresql" else MARIADB_ADMIN_URL
        url = dialect.database_url(raw)
        options = {"isolation_level": "AUTOCOMMIT"}
        return create_engine(url, connect_args={"connect_timeout": 3}, **options)

    def create(self, kind: str) -> str:
        """A new empty database of ``kind``; returns its plain URL."""
        name = f"syncd_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        if kind == "sqlite":
            return f"sqlite:///{self.base / (name + '.db')}"
        if kind in self.unavailable:
            self._missing(kind, self.unavailable[kind])
        admin = self._admin(kind)
        try:
            with admin.connect() as conn:
                if kind == "postgresql":
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                else:
                    conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        except Exception as exc:  # the server is not there
            self.unavailable[kind] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            self._missing(kind, self.unavailable[kind])
        finally:
            admin.dispose()
        self.created.append((kind, name))
        base = make_url(PG_ADMIN_URL if kind == "postgresql" else MARIADB_ADMIN_URL)
        return base.set(database=name).render_as_string(hide_password=False)

    def _missing(self, kind: str, reason: str) -> None:
        message = f"{kind} test server unavailable ({reason})"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(f"!!! SKIPPED: {message}")

    def drop_all(self) -> None:
        for kind, name in self.created:
            admin = self._admin(kind)
            try:
                with admin.connect() as conn:
                    quoted = f'"{name}"' if kind == "postgresql" else f"`{name}`"
                    if kind == "postgresql":
                        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
                    else:
                        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted}"))
            except Exception as exc:  # don't hide test results behind cleanup
                print(f"could not drop test database {name}: {exc}")
            finally:
                admin.dispose()


@pytest.fixture(scope="session")
def database_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseServers]:
    servers = DatabaseServers(tmp_path_factory.mktemp("sqlite"))
    yield servers
    servers.drop_all()


@pytest.fixture(scope="session")
def _migrated(database_servers: DatabaseServers) -> Iterator[dict[str, TestDatabase]]:
    cache: dict[str, TestDatabase] = {}
    yield cache
    for database in cache.values():
        database.engine.dispose()


@pytest.fixture(params=KINDS)
def db(
    request: pytest.FixtureRequest,
    database_servers: DatabaseServers,
    _migrated: dict[str, TestDatabase],
) -> TestDatabase:
    """A migrated, empty database of each kind (the test runs once per kind)."""
    return _database(request.param, database_servers, _migrated)


@pytest.fixture
def sqlite_db(
    database_servers: DatabaseServers, _migrated: dict[str, TestDatabase]
) -> TestDatabase:
    """The SQLite database alone, for tests whose point does not depend on the kind."""
    return _database("sqlite", database_servers, _migrated)


def _database(
    kind: str, servers: DatabaseServers, migrated: dict[str, TestDatabase]
) -> TestDatabase:
    if kind not in migrated:
        url = servers.create(kind)
        upgrade(url)
        migrated[kind] = TestDatabase(kind, url, make_engine(url))
    database = migrated[kind]
    database.reset()
    return database


@pytest.fixture
def fresh_database(database_servers: DatabaseServers) -> Callable[[str], str]:
    """A factory of new, empty (unmigrated) databases: ``fresh_database(kind) -> url``."""
    return database_servers.create


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """syncd's logging set up as `syncd` sets it up, at DEBUG (successful webhooks
    log there), writing JSON lines into a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setattr(logs, "_hidden", set())
    buffer = io.StringIO()
    logs.setup("DEBUG", stream=buffer)  # not a terminal: JSON lines; every line there is
    try:
        yield buffer
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A unix datagram socket like systemd's $NOTIFY_SOCKET (short path: 108 bytes max)."""
    directory = tempfile.mkdtemp(prefix="syncd-notify-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)
