"""The ai schema: per-user settings, per-conversation policy, daily usage, audit.

No table holds message content, prompts or model output: the audit records who asked
what kind of thing of which provider and how much it cost (message count, tokens), so
an operator can account for external calls without being able to read a conversation.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text

from secureconnect.models import ID, UtcDateTime, new_id, new_metadata, utcnow

metadata = new_metadata()

__all__ = ["ID", "ai_audit", "ai_conversation_policy", "ai_usage", "ai_user_settings",
           "metadata", "new_id", "utcnow"]


#: one row per user who ever changed their AI settings (no row = opted out, defaults)
ai_user_settings = Table(
    "ai_user_settings",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("language", String(35), nullable=True),
    # JSON object {"summary": bool, "smart_replies": bool}
    Column("features", Text, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

#: one row per conversation whose admins switched a feature off (no row = all allowed)
ai_conversation_policy = Table(
    "ai_conversation_policy",
    metadata,
    Column("conversation_id", ID, primary_key=True),
    Column("summary", Boolean, nullable=False),
    Column("smart_replies", Boolean, nullable=False),
    Column("updated_by", ID, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

#: requests and estimated tokens per user per UTC day (the quota counters)
ai_usage = Table(
    "ai_usage",
    metadata,
    Column("user_id", ID, primary_key=True),
    # ISO date "2026-11-29" (UTC)
    Column("day", String(10), primary_key=True),
    Column("requests", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
)

#: one row per provider call: never content
ai_audit = Table(
    "ai_audit",
    metadata,
    Column("id", ID, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("user_id", ID, nullable=False),
    Column("conversation_id", ID, nullable=False),
    # summary | smart_replies
    Column("feature", String(32), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    # "map", "reduce" or "single" for summaries; "single" for smart replies
    Column("stage", String(16), nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    # ok | timeout | unavailable | error
    Column("status", String(16), nullable=False),
    Column("latency_ms", Integer, nullable=False),
)
Index("ix_ai_audit_created", ai_audit.c.created_at)
Index("ix_ai_audit_user", ai_audit.c.user_id, ai_audit.c.created_at)
