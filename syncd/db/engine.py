"""Engines and the schema revision check.

Turns the configured URL into an engine with the right driver and set-up
(through :mod:`syncd.db.dialect`), finds the migrations (beside the package
when installed, at the repository root in a checkout) and tells whether the
database's schema is at the newest migration.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine

from syncd.db import dialect
from syncd.errors import SchemaNotAtHead


def make_engine(url: str) -> Engine:
    parsed = dialect.database_url(url)
    engine = create_engine(parsed, **dialect.engine_options(parsed))
    dialect.configure_engine(engine)
    return engine


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
    database = engine.url.database
    on_file = engine.dialect.name == "sqlite" and database and database != ":memory:"
    if on_file and database and not Path(database).exists():
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
        (step.revision, (step.doc or "").strip())
        for step in script.iterate_revisions(after, before)
        if step.revision != before
    ]
    return list(reversed(applied))
