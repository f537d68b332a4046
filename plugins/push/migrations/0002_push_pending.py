"""push: push_pending (one row per message or call event, expanded by the workers)

Revision ID: push_0002
Revises: push_0001
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "push_0002"
down_revision = "push_0001"
branch_labels = None
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "push_pending",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("claim_until", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_pending"),
    )
    op.create_index("ix_push_pending_created", "push_pending", ["created_at"])
    op.create_index("ix_push_pending_claim", "push_pending", ["claim_token"])


def downgrade() -> None:
    op.drop_index("ix_push_pending_claim", table_name="push_pending")
    op.drop_index("ix_push_pending_created", table_name="push_pending")
    op.drop_table("push_pending")
