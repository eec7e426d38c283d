"""CHECK constraints on events.status and events.source.

The values are those of ``syncd.vocabulary.EventStatus`` and ``EventSource``,
the only place syncd spells them; a value outside them is refused by the
database itself. SQLite adds a constraint by rebuilding the table (batch mode).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:00:00
"""

from collections.abc import Sequence

from alembic import op

from syncd.vocabulary import EventSource, EventStatus, check_in

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_check_constraint(op.f("ck_events_status"), check_in("status", EventStatus))
        batch_op.create_check_constraint(op.f("ck_events_source"), check_in("source", EventSource))


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_events_source"), type_="check")
        batch_op.drop_constraint(op.f("ck_events_status"), type_="check")
