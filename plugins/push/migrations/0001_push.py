"""push: push_devices, push_outbox, push_dead_letters, push_mutes

Revision ID: push_0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "push_0001"
down_revision = None
branch_labels = ("push",)
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "push_devices",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("token", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("app_id", sa.String(255), nullable=True),
        sa.Column("locale", sa.String(35), nullable=True),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_devices"),
        sa.UniqueConstraint("token_hash", name="uq_push_devices_token_hash"),
    )
    op.create_index("ix_push_devices_user", "push_devices", ["user_id"])
    op.create_table(
        "push_outbox",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("collapse_key", sa.String(128), nullable=True),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.Column("next_attempt_at", _utc(), nullable=False),
        sa.Column("claim_token", sa.String(36), nullable=True),
        sa.Column("claim_until", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_outbox"),
    )
    op.create_index("ix_push_outbox_due", "push_outbox", ["next_attempt_at"])
    op.create_index("ix_push_outbox_claim", "push_outbox", ["claim_token"])
    op.create_index("ix_push_outbox_device", "push_outbox", ["device_id"])
    op.create_table(
        "push_dead_letters",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("device_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("collapse_key", sa.String(128), nullable=True),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("failed_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_dead_letters"),
    )
    op.create_index("ix_push_dead_letters_failed", "push_dead_letters", ["failed_at"])
    op.create_table(
        "push_mutes",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("muted_until", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "conversation_id", name="pk_push_mutes"),
    )


def downgrade() -> None:
    op.drop_table("push_mutes")
    op.drop_index("ix_push_dead_letters_failed", table_name="push_dead_letters")
    op.drop_table("push_dead_letters")
    op.drop_index("ix_push_outbox_device", table_name="push_outbox")
    op.drop_index("ix_push_outbox_claim", table_name="push_outbox")
    op.drop_index("ix_push_outbox_due", table_name="push_outbox")
    op.drop_table("push_outbox")
    op.drop_index("ix_push_devices_user", table_name="push_devices")
    op.drop_table("push_devices")
