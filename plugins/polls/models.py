"""The polls schema: polls, their options, and one row per (voter, chosen option).

Integrity lives in the database, not in Python: a vote row references an option *of
the same poll* (composite foreign key), a voter can pick an option only once (primary
key), and every vote or close first bumps ``polls.version`` with a conditional
``UPDATE``, which serialises the writers of one poll (row lock on PostgreSQL, the write
lock on SQLite) so concurrent ballots are never lost or double-counted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from secureconnect.models import ID, UtcDateTime, new_metadata

metadata = new_metadata()






polls = Table(
    "polls",
    metadata,
    Column("id", ID, primary_key=True),
    Column("conversation_id", ID, nullable=False),
    Column("creator_id", ID, nullable=False),
    Column("question", Text, nullable=False),
    Column("allow_multiple", Boolean, nullable=False),
    Column("max_choices", Integer, nullable=False),
    Column("anonymous", Boolean, nullable=False),
    # "always" or "after_close"
    Column("results_visibility", String(16), nullable=False),
    Column("closes_at", UtcDateTime, nullable=True),
    Column("closed_at", UtcDateTime, nullable=True),
    # "closed" (by a person) or "expired" (reached closes_at); NULL while open
    Column("closed_reason", String(16), nullable=True),
    Column("closed_by", ID, nullable=True),
    Column("message_id", String(64), nullable=True),
    # bumped by every vote, retraction and close: orders poll.updated events
    Column("version", Integer, nullable=False, default=0),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("max_choices >= 1", name="max_choices_positive"),
    CheckConstraint("results_visibility IN ('always', 'after_close')", name="results_visibility"),
    CheckConstraint(
        "(closed_at IS NULL AND closed_reason IS NULL) OR "
        "(closed_at IS NOT NULL AND closed_reason IN ('closed', 'expired'))",
        name="closed_state",
    ),
)
Index("ix_polls_conversation", polls.c.conversation_id, polls.c.created_at)
# The expiry job scans open polls by deadline.
Index("ix_polls_open_deadline", polls.c.closed_at, polls.c.closes_at)

poll_options = Table(
    "poll_options",
    metadata,
    Column("id", ID, primary_key=True),
    Column("poll_id", ID, ForeignKey("polls.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("text", Text, nullable=False),
    UniqueConstraint("poll_id", "position", name="uq_poll_options_position"),
    # target of the votes' composite key: an option id only counts for its own poll
    UniqueConstraint("poll_id", "id", name="uq_poll_options_poll_option"),
)

poll_votes = Table(
    "poll_votes",
    metadata,
    Column("poll_id", ID, ForeignKey("polls.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ID, primary_key=True),
    Column("option_id", ID, primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(
        ["poll_id", "option_id"],
        ["poll_options.poll_id", "poll_options.id"],
        name="fk_poll_votes_option_of_poll",
        ondelete="CASCADE",
    ),
)
Index("ix_poll_votes_option", poll_votes.c.poll_id, poll_votes.c.option_id)


def row_dict(row: Any) -> dict[str, Any]:
    return dict(row._mapping)
