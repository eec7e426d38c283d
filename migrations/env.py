"""alembic environment: the URL from syncd's settings, the metadata from its models."""

from __future__ import annotations

import logging.config
from typing import Any

import sqlalchemy as sa
from alembic import context
from sqlalchemy import Connection

from syncd.config import load_settings
from syncd.db.engine import make_engine
from syncd.db.models import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _boolean(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = text.strip().strip("'\"").lower()
    return {"0": "false", "1": "true"}.get(cleaned, cleaned)


def _compare_default(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """A boolean default reads back as ``0`` on MariaDB and ``false`` on
    PostgreSQL: the same default, not drift. Others: alembic's own comparison."""
    if isinstance(metadata_column.type, sa.Boolean):
        return _boolean(inspected_default) != _boolean(rendered_metadata_default)
    return None


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=_compare_default,
        # SQLite cannot ALTER most things: batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.attributes.get("syncd_database_url") or load_settings().database_url
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("syncd migrations run online only: give them a database")
run_migrations_online()
