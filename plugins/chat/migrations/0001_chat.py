"""chat: conversations, participants, messages, message counters

Revision ID: chat_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "chat_0001"
down_revision = None
branch_labels = ("chat",)
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "chat_conversations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("direct_key", sa.String(80), nullable=True),
        sa.Column("created_by", sa.String(36), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("last_message_at", _utc(), nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.CheckConstraint("type IN ('direct', 'group')", name="ck_chat_conversations_type"),
        sa.PrimaryKeyConstraint("id", name="pk_chat_conversations"),
        sa.UniqueConstraint("direct_key", name="uq_chat_conversations_direct_key"),
    )
    op.create_index("ix_chat_conversations_activity", "chat_conversations", ["last_message_at"])
    op.create_table(
        "chat_participants",
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("joined_at", _utc(), nullable=False),
        sa.Column("last_read_seq", sa.Integer(), nullable=False),
        sa.Column("last_read_message_id", sa.String(64), nullable=True),
        sa.CheckConstraint(
            "role IN ('owner', 'admin', 'member')", name="ck_chat_participants_role"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["chat_conversations.id"],
            ondelete="CASCADE",
            name="fk_chat_participants_conversation_id_chat_conversations",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", name="pk_chat_participants"),
    )
    op.create_index("ix_chat_participants_user", "chat_participants", ["user_id"])
    op.create_table(
        "chat_messages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender_id", sa.String(36), nullable=False),
        sa.Column("message_type", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("file_id", sa.String(36), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("edited_at", _utc(), nullable=True),
        sa.Column("deleted_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_chat_messages"),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_chat_messages_seq"),
        sa.UniqueConstraint(
            "conversation_id",
            "sender_id",
            "idempotency_key",
            name="uq_chat_messages_idempotency",
        ),
    )
    op.create_table(
        "chat_message_counters",
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_chat_message_counters"),
    )


def downgrade() -> None:
    op.drop_table("chat_message_counters")
    op.drop_table("chat_messages")
    op.drop_index("ix_chat_participants_user", table_name="chat_participants")
    op.drop_table("chat_participants")
    op.drop_index("ix_chat_conversations_activity", table_name="chat_conversations")
    op.drop_table("chat_conversations")
