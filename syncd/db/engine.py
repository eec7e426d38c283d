"""Engines and the schema revision check.

Turns the configured URL into an engine with the right driver and set-up
(through :mod:`syncd.db.dialect`), finds the migrations (beside the package
when installed, at the repository root in a checkout) and tells whether the
database's schema is at the newest migration.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from syncd.db import dialect
from syncd.errors import SchemaNotAtHead


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 30.0
) -> Engine:
    parsed = dialect.database_url(url)
    options = dialect.engine_options(
        parsed, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout
    )
    engine = create_engine(parsed, **options)
    dialect.configure_engine(engine)
    return engine


_lock_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def lock_engine(engine: Engine) -> Engine:
    """An engine beside ``engine`` for locks held through a long run (the
    reconcile lock): each lock gets a connection of its own, outside
    ``engine``'s pool. A run that held a pooled connection for its lock and
    then waited for a second one for its work could wait for itself: with
    one lock per store, as many stores as the pool holds took the whole pool
    and none got its second connection. Without a pool (``NullPool``) the
    connection is opened for the lock and closed with it."""
    found = _lock_engines.get(engine)
    if found is None:
        options = dialect.engine_options(engine.url)
        for name in ("pool_size", "max_overflow", "pool_timeout", "pool_recycle"):
            options.pop(name, None)
        found = create_engine(engine.url, poolclass=NullPool, **options)
        dialect.configure_engine(found)
        _lock_engines[engine] = found
    return found


def migrations_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("syncd's migrations are missing from the installation")


def alembic_config(url: str) -> Config:
    """An alembic Config for ``url`` that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["syncd_database_url"] = url
    return config


def head_revision() -> str | None:
    script = ScriptDirectory(str(migrations_dir()))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    with dialect.reading(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_schema_at_head(engine: Engine) -> None:
    database = dialect.database_file(engine.url)
    if database is not None and not Path(database).exists():
        # Connecting would create an empty file; say what to run instead.
        raise SchemaNotAtHead(None, head_revision(), missing_file=database)
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaNotAtHead(current, head)


def upgrade(url: str, revision: str = "head") -> list[tuple[str, str]]:
    """Migrate to ``revision``; returns the migrations applied, oldest first,
    as (revision, message) pairs (empty when there was nothing to do)."""
    from alembic import command

    engine = make_engine(url)
    try:
        before = current_revision(engine)
        command.upgrade(alembic_config(url), revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if after == before or after is None:
        return []
    script = ScriptDirectory(str(migrations_dir()))
    applied = [
        (step.revision, " ".join((step.doc or "").split()))  # one line each
        for step in script.iterate_revisions(after, before)
        if step.revision != before
    ]
    return list(reversed(applied))
