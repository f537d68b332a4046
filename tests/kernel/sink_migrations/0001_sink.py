"""kitchen_sink: kitchen_sink_items

Revision ID: sink_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "sink_0001"
down_revision = None
branch_labels = ("kitchen_sink",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kitchen_sink_items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(50)),
    )


def downgrade() -> None:
    op.drop_table("kitchen_sink_items")
