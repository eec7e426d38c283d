"""PostgreSQL compresses the large JSON columns with lz4 instead of pglz.

An order's payload is about 2.5 kB of JSON, past PostgreSQL's 2 kB TOAST
threshold, so most are compressed on the way in; pglz made that a third of
the server's work for each stored event and order in a backfill (COPY of
20,000 events: 100 → 73 µs of server CPU each). Only storage changes: the
values, their type (JSONB) and every query stay the same. Rows written
before keep their pglz compression until they are next written.

A no-op on SQLite and MariaDB, and on a PostgreSQL server older than 14 or
built without lz4.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 09:55:00
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("events", "payload"), ("orders", "raw"), ("customers", "raw"))


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    return bool(
        bind.execute(
            text(
                "SELECT current_setting('server_version_num')::int >= 140000 AND EXISTS ("
                "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' "
                "AND 'lz4' = ANY(enumvals))"
            )
        ).scalar()
    )


def _set(method: str) -> None:
    if _lz4_available():
        for table, column in COLUMNS:
            op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" SET COMPRESSION {method}')


def upgrade() -> None:
    _set("lz4")


def downgrade() -> None:
    _set("default")
