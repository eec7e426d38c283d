"""The worker's claim order gets its own index.

The claim (``status = 'pending' … ORDER BY received_at LIMIT n``) sorted the
whole backlog for every batch with the old (store, status, next_attempt_at)
index: 32 ms per batch with 6,200 pending events on PostgreSQL, so catching
up after an outage slowed down as the backlog grew. (store, status,
received_at) returns the oldest pending events in order and stops at ``n``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 07:05:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_queue", ["store", "status", "received_at"], unique=False)
        batch_op.drop_index("ix_events_claim")


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_claim", ["store", "status", "next_attempt_at"], unique=False
        )
        batch_op.drop_index("ix_events_queue")
