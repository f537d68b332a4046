"""ai: ai_user_settings, ai_conversation_policy, ai_usage, ai_audit

Revision ID: ai_0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "ai_0001"
down_revision = None
branch_labels = ("ai",)
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ai_user_settings",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(35), nullable=True),
        sa.Column("features", sa.Text(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_ai_user_settings"),
    )
    op.create_table(
        "ai_conversation_policy",
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("summary", sa.Boolean(), nullable=False),
        sa.Column("smart_replies", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(36), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_ai_conversation_policy"),
    )
    op.create_table(
        "ai_usage",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", name="pk_ai_usage"),
    )
    op.create_table(
        "ai_audit",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("feature", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ai_audit"),
    )
    op.create_index("ix_ai_audit_created", "ai_audit", ["created_at"])
    op.create_index("ix_ai_audit_user", "ai_audit", ["user_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_ai_audit_user", table_name="ai_audit")
    op.drop_index("ix_ai_audit_created", table_name="ai_audit")
    op.drop_table("ai_audit")
    op.drop_table("ai_usage")
    op.drop_table("ai_conversation_policy")
    op.drop_table("ai_user_settings")
