"""The video schema: ``calls`` and ``call_participants``.

Invariants kept by the database, not by Python:

* one live (ringing or active) call per conversation: ``calls.live_conversation_id``
  is the conversation id while the call is live and ``NULL`` once it ended, under a
  unique constraint (``NULL``\\ s never collide), so two concurrent initiates cannot both
  succeed;
* every state change of a call starts with a conditional ``UPDATE calls SET version =
  version + 1 WHERE id = :id AND status <> 'ended'``, which serialises the writers of
  one call (row lock on PostgreSQL, the write lock on SQLite).

Participant ``status``: ``invited`` (ringing for them), ``joined``, ``left``,
``declined``, ``missed`` (never answered a group call before its ring timeout).
``seen_at`` is refreshed while the user has a socket on some instance; ``gone_since``
is set when their last socket on an instance dropped and cleared when one comes back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, String, Table

from secureconnect.models import ID, UtcDateTime, new_metadata, utcnow

metadata = new_metadata()

CALL_STATUSES = ("ringing", "active", "ended")
END_REASONS = ("completed", "missed", "declined", "ended_by_host", "stale")
PARTICIPANT_STATUSES = ("invited", "joined", "left", "declined", "missed")

calls = Table(
    "calls",
    metadata,
    Column("id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    # the conversation id while ringing/active, NULL once ended (unique: one live call)
    Column("live_conversation_id", ID, nullable=True, unique=True),
    Column("conversation_type", String(16), nullable=False),
    Column("initiator_id", ID, nullable=False),
    Column("type", String(8), nullable=False),
    Column("status", String(8), nullable=False),
    Column("end_reason", String(16), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("ring_deadline", UtcDateTime(), nullable=False),
    Column("answered_at", UtcDateTime(), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("version", Integer, nullable=False, default=0),
    CheckConstraint("type IN ('audio', 'video')", name="type"),
    CheckConstraint("status IN ('ringing', 'active', 'ended')", name="status"),
    CheckConstraint(
        "(status = 'ended' AND end_reason IS NOT NULL AND ended_at IS NOT NULL "
        "AND live_conversation_id IS NULL) OR "
        "(status <> 'ended' AND end_reason IS NULL AND live_conversation_id IS NOT NULL)",
        name="ended_state",
    ),
)
Index("ix_calls_conversation", calls.c.conversation_id, calls.c.created_at)
# the reaper scans live calls by age
Index("ix_calls_status_created", calls.c.status, calls.c.created_at)

call_participants = Table(
    "call_participants",
    metadata,
    Column("call_id", ID, ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ID, primary_key=True),
    Column("status", String(8), nullable=False),
    # why they left: hangup | declined | disconnected | removed | ended
    Column("left_reason", String(16), nullable=True),
    # removed from the conversation: no further event of this call reaches them
    Column("removed", Boolean, nullable=False, default=False),
    Column("joined_at", UtcDateTime(), nullable=True),
    Column("left_at", UtcDateTime(), nullable=True),
    Column("audio", Boolean, nullable=False, default=True),
    Column("video", Boolean, nullable=False, default=False),
    Column("screen", Boolean, nullable=False, default=False),
    Column("hand", Boolean, nullable=False, default=False),
    Column("seen_at", UtcDateTime(), nullable=True),
    Column("gone_since", UtcDateTime(), nullable=True),
    CheckConstraint(
        "status IN ('invited', 'joined', 'left', 'declined', 'missed')", name="status"
    ),
)
# presence updates and the reaper find joined participants of a user
Index("ix_call_participants_user_status", call_participants.c.user_id, call_participants.c.status)


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


__all__ = ["call_participants", "calls", "metadata", "row_dict", "utcnow"]
