"""Snapshots know themselves, ties the stored events cannot decide get refreshed,
and ``syncd audit --repair`` is a source of events.

``events.snapshot`` marks the events syncd made from a copy read from the API
(backfill, resource sync): the version order treats such a copy by when it was
read, never by its id (docs/apply-rules.md). Existing snapshots are the rows
whose id syncd gave them (``snap_…``). ``refresh_requests`` lists the orders
and customers whose newest version two same-second events cannot decide;
reconcile fetches their current copies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import syncd.db.dialect

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SNAPSHOT_COMMENT = (
    "True when syncd made the event from a copy of the order or customer read "
    "from the API (backfill, resource sync, refresh, audit); its created_at is when it was "
    "read. "
    "False for Shoperti's own events."
)


SOURCE_COMMENT = (
    "How the event reached syncd: webhook, reconcile, backfill or audit (syncd audit --repair)."
)
OLD_SOURCE_COMMENT = "How the event reached syncd: webhook, reconcile or backfill."


def _ident(length: int) -> sa.types.TypeEngine[str]:
    return (
        sa.String(length=length)
        .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=length), "mariadb")
        .with_variant(mysql.VARCHAR(collation="utf8mb4_bin", length=length), "mysql")
    )


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "snapshot",
                sa.Boolean(),
                server_default=sa.false(),
                nullable=False,
                comment=SNAPSHOT_COMMENT,
            )
        )
    events = sa.table("events", sa.column("id", sa.String()), sa.column("snapshot", sa.Boolean()))
    op.execute(
        events.update().where(sa.func.substr(events.c.id, 1, 5) == "snap_").values(snapshot=True)
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column(
            "source",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment=SOURCE_COMMENT,
            existing_comment=OLD_SOURCE_COMMENT,
        )
    op.create_table(
        "refresh_requests",
        sa.Column(
            "store",
            _ident(64),
            nullable=False,
            comment="Name of the configured store this row belongs to.",
        ),
        sa.Column("resource", sa.String(length=16), nullable=False, comment="order or customer."),
        sa.Column(
            "resource_id", _ident(128), nullable=False, comment="Id of the order or customer."
        ),
        sa.Column(
            "not_before",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=False,
            comment="Earliest time a copy read from the API is known to be newer than both "
            "events (UTC): their time plus the clock margin.",
        ),
        sa.Column(
            "requested_at",
            syncd.db.dialect.UTCDateTime(timezone=True),
            nullable=False,
            comment="When apply found the tie (UTC).",
        ),
        sa.PrimaryKeyConstraint(
            "store", "resource", "resource_id", name=op.f("pk_refresh_requests")
        ),
        comment="Orders and customers whose newest version the stored events cannot tell "
        "(two events with the same whole-second times and different content): reconcile "
        "fetches the API's current copy of each and removes the row.",
    )


def downgrade() -> None:
    op.drop_table("refresh_requests")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.alter_column(
            "source",
            existing_type=sa.String(length=16),
            existing_nullable=False,
            comment=OLD_SOURCE_COMMENT,
            existing_comment=SOURCE_COMMENT,
        )
        batch_op.drop_column("snapshot")
