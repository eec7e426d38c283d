"""Migrations: upgrade, no drift from the models, downgrade, upgrade again —
on SQLite, PostgreSQL and MariaDB; and the data dictionary is current."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from alembic import command
from sqlalchemy import insert, inspect, select, text
from sqlalchemy.exc import DBAPIError

from syncd.db.dictionary import render
from syncd.db.engine import alembic_config, check_schema_at_head, head_revision, make_engine
from syncd.db.models import Event, metadata
from syncd.errors import SchemaNotAtHead
from syncd.inbox import event_row, put
from syncd.shoperti import wire
from syncd.vocabulary import EventSource, EventStatus
from tests.support import REPO


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_upgrade_check_downgrade_upgrade(kind: str, fresh_database: Callable[[str], str]) -> None:
    url = fresh_database(kind)
    config = alembic_config(url)
    engine = make_engine(url)
    try:
        with pytest.raises(SchemaNotAtHead, match="syncd db upgrade"):
            check_schema_at_head(engine)
        command.upgrade(config, "head")
        command.check(config)  # raises if the models and the migrations differ
        check_schema_at_head(engine)
        tables = set(inspect(engine).get_table_names())
        assert set(metadata.tables) <= tables
        if kind != "sqlite":  # SQLite keeps no comments
            for table in metadata.sorted_tables:
                assert inspect(engine).get_table_comment(table.name)["text"] == table.comment
        command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) - {"alembic_version"} == set()
        command.upgrade(config, "head")
        check_schema_at_head(engine)
    finally:
        engine.dispose()


def test_alembic_cli_from_repo_root(fresh_database: Callable[[str], str]) -> None:
    url = fresh_database("sqlite")
    env = {"SYNCD_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}
    alembic = [sys.executable, "-m", "alembic"]
    for args in (["upgrade", "head"], ["check"], ["current"]):
        result = subprocess.run(
            [*alembic, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
    head = head_revision()
    assert head is not None and head in result.stdout


def test_every_table_and_column_has_a_comment() -> None:
    for table in metadata.sorted_tables:
        assert table.comment, table.name
        assert next(iter(table.primary_key.columns)).name == "store", table.name
        for column in table.columns:
            assert column.comment, f"{table.name}.{column.name}"


def test_data_dictionary_is_current() -> None:
    committed = (REPO / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    assert committed == render(), "run: syncd db dictionary > docs/data-dictionary.md"


def test_postgresql_compresses_the_json_columns_with_lz4(
    fresh_database: Callable[[str], str],
) -> None:
    url = fresh_database("postgresql")
    config = alembic_config(url)
    engine = make_engine(url)
    query = text(
        "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute "
        "WHERE (attrelid, attname) IN (('events'::regclass, 'payload'), "
        "('orders'::regclass, 'raw'), ('customers'::regclass, 'raw'))"
    )
    try:
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert dict(conn.execute(query).all()) == {
                "events.payload": "l",
                "orders.raw": "l",
                "customers.raw": "l",
            }
        command.downgrade(config, "0002")
        with engine.connect() as conn:
            assert set(dict(conn.execute(query).all()).values()) == {""}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("column", "value"), [("status", "done"), ("source", "email"), ("status", "retry")]
)
def test_the_database_refuses_a_status_or_source_outside_the_vocabulary(
    db: Any, column: str, value: str
) -> None:
    """CHECK constraints (migration 0007) built from EventStatus and EventSource."""
    row = event_row(
        "default",
        wire.parse_envelope({"id": "evt_1", "type": "order.paid"}),
        source=EventSource.WEBHOOK,
        verified=False,
    )
    with db.engine.begin() as conn:
        put(conn, [row])  # the vocabulary's own words are accepted
    row = row | {"id": "evt_2", column: value}
    with pytest.raises(DBAPIError), db.engine.begin() as conn:
        conn.execute(insert(Event), [row])
    with db.engine.connect() as conn:
        assert conn.scalars(select(Event.id)).all() == ["evt_1"]
    assert {member.value for member in EventStatus} == {
        "pending",
        "applied",
        "ignored",
        "rejected",
        "failed",
    }
