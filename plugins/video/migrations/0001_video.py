"""video: calls, call_participants

Revision ID: video_0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "video_0001"
down_revision = None
branch_labels = ("video",)
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("live_conversation_id", sa.String(36), nullable=True),
        sa.Column("conversation_type", sa.String(16), nullable=False),
        sa.Column("initiator_id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("end_reason", sa.String(16), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("ring_deadline", _utc(), nullable=False),
        sa.Column("answered_at", _utc(), nullable=True),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint("type IN ('audio', 'video')", name="ck_calls_type"),
        sa.CheckConstraint("status IN ('ringing', 'active', 'ended')", name="ck_calls_status"),
        sa.CheckConstraint(
            "(status = 'ended' AND end_reason IS NOT NULL AND ended_at IS NOT NULL "
            "AND live_conversation_id IS NULL) OR "
            "(status <> 'ended' AND end_reason IS NULL AND live_conversation_id IS NOT NULL)",
            name="ck_calls_ended_state",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.UniqueConstraint("live_conversation_id", name="uq_calls_live_conversation_id"),
    )
    op.create_index("ix_calls_conversation", "calls", ["conversation_id", "created_at"])
    op.create_index("ix_calls_status_created", "calls", ["status", "created_at"])
    op.create_table(
        "call_participants",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("left_reason", sa.String(16), nullable=True),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.Column("joined_at", _utc(), nullable=True),
        sa.Column("left_at", _utc(), nullable=True),
        sa.Column("audio", sa.Boolean(), nullable=False),
        sa.Column("video", sa.Boolean(), nullable=False),
        sa.Column("screen", sa.Boolean(), nullable=False),
        sa.Column("hand", sa.Boolean(), nullable=False),
        sa.Column("seen_at", _utc(), nullable=True),
        sa.Column("gone_since", _utc(), nullable=True),
        sa.CheckConstraint(
            "status IN ('invited', 'joined', 'left', 'declined', 'missed')",
            name="ck_call_participants_status",
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], ondelete="CASCADE",
            name="fk_call_participants_call_id_calls",
        ),
        sa.PrimaryKeyConstraint("call_id", "user_id", name="pk_call_participants"),
    )
    op.create_index(
        "ix_call_participants_user_status", "call_participants", ["user_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_call_participants_user_status", table_name="call_participants")
    op.drop_table("call_participants")
    op.drop_index("ix_calls_status_created", table_name="calls")
    op.drop_index("ix_calls_conversation", table_name="calls")
    op.drop_table("calls")
