"""The chat schema.

Relational tables (always SQL): ``chat_conversations`` and ``chat_participants``.
Message tables (only for the SQL :class:`~.store.SqlMessageStore`; a Cassandra store
keeps its own): ``chat_messages`` and ``chat_message_counters``.

Integrity lives in the database: one direct conversation per pair of users (unique
``direct_key``), one ``seq`` per message and conversation (unique), one message per
idempotency key and sender in a conversation (unique), one participation per user.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from secureconnect.models import ID, UtcDateTime, new_metadata

metadata = new_metadata()

ROLES = ("owner", "admin", "member")
CONVERSATION_TYPES = ("direct", "group")




conversations = Table(
    "chat_conversations",
    metadata,
    Column("id", ID, primary_key=True),
    Column("type", String(8), nullable=False),
    Column("name", String(200), nullable=True),
    Column("description", Text, nullable=True),
    # "<smaller user id>:<larger user id>" for direct conversations; NULL for groups
    Column("direct_key", String(80), nullable=True, unique=True),
    Column("created_by", ID, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # newest message: orders "my conversations" and gives unread counts
    Column("last_message_at", UtcDateTime, nullable=True),
    Column("last_seq", Integer, nullable=False, default=0),
    CheckConstraint("type IN ('direct', 'group')", name="type"),
)
Index("ix_chat_conversations_activity", conversations.c.last_message_at)

participants = Table(
    "chat_participants",
    metadata,
    Column(
        "conversation_id",
        ID,
        ForeignKey("chat_conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_id", ID, primary_key=True),
    Column("role", String(8), nullable=False),
    Column("joined_at", UtcDateTime, nullable=False),
    # read receipt: the highest seq this participant has read
    Column("last_read_seq", Integer, nullable=False, default=0),
    Column("last_read_message_id", String(64), nullable=True),
    CheckConstraint("role IN ('owner', 'admin', 'member')", name="role"),
)
Index("ix_chat_participants_user", participants.c.user_id)

messages = Table(
    "chat_messages",
    metadata,
    Column("id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("sender_id", ID, nullable=False),
    Column("message_type", String(16), nullable=False),
    # NULL once deleted (tombstone)
    Column("content", Text, nullable=True),
    Column("is_encrypted", Boolean, nullable=False, default=False),
    Column("metadata", Text, nullable=True),
    Column("file_id", ID, nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("edited_at", UtcDateTime, nullable=True),
    Column("deleted_at", UtcDateTime, nullable=True),
    UniqueConstraint("conversation_id", "seq", name="uq_chat_messages_seq"),
    UniqueConstraint(
        "conversation_id", "sender_id", "idempotency_key", name="uq_chat_messages_idempotency"
    ),
)

message_counters = Table(
    "chat_message_counters",
    metadata,
    Column("conversation_id", ID, primary_key=True),
    Column("last_seq", Integer, nullable=False),
)
