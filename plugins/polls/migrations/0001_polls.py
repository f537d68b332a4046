"""polls: polls, poll_options, poll_votes

Revision ID: polls_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "polls_0001"
down_revision = None
branch_labels = ("polls",)
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "polls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("creator_id", sa.String(36), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("allow_multiple", sa.Boolean(), nullable=False),
        sa.Column("max_choices", sa.Integer(), nullable=False),
        sa.Column("anonymous", sa.Boolean(), nullable=False),
        sa.Column("results_visibility", sa.String(16), nullable=False),
        sa.Column("closes_at", _utc(), nullable=True),
        sa.Column("closed_at", _utc(), nullable=True),
        sa.Column("closed_reason", sa.String(16), nullable=True),
        sa.Column("closed_by", sa.String(36), nullable=True),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.CheckConstraint("max_choices >= 1", name="ck_polls_max_choices_positive"),
        sa.CheckConstraint(
            "results_visibility IN ('always', 'after_close')", name="ck_polls_results_visibility"
        ),
        sa.CheckConstraint(
            "(closed_at IS NULL AND closed_reason IS NULL) OR "
            "(closed_at IS NOT NULL AND closed_reason IN ('closed', 'expired'))",
            name="ck_polls_closed_state",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_polls"),
    )
    op.create_index("ix_polls_conversation", "polls", ["conversation_id", "created_at"])
    op.create_index("ix_polls_open_deadline", "polls", ["closed_at", "closes_at"])
    op.create_table(
        "poll_options",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("poll_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["poll_id"], ["polls.id"], ondelete="CASCADE", name="fk_poll_options_poll_id_polls"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_poll_options"),
        sa.UniqueConstraint("poll_id", "position", name="uq_poll_options_position"),
        sa.UniqueConstraint("poll_id", "id", name="uq_poll_options_poll_option"),
    )
    op.create_table(
        "poll_votes",
        sa.Column("poll_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("option_id", sa.String(36), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["poll_id"], ["polls.id"], ondelete="CASCADE", name="fk_poll_votes_poll_id_polls"
        ),
        sa.ForeignKeyConstraint(
            ["poll_id", "option_id"],
            ["poll_options.poll_id", "poll_options.id"],
            ondelete="CASCADE",
            name="fk_poll_votes_option_of_poll",
        ),
        sa.PrimaryKeyConstraint("poll_id", "user_id", "option_id", name="pk_poll_votes"),
    )
    op.create_index("ix_poll_votes_option", "poll_votes", ["poll_id", "option_id"])


def downgrade() -> None:
    op.drop_index("ix_poll_votes_option", table_name="poll_votes")
    op.drop_table("poll_votes")
    op.drop_table("poll_options")
    op.drop_index("ix_polls_open_deadline", table_name="polls")
    op.drop_index("ix_polls_conversation", table_name="polls")
    op.drop_table("polls")
