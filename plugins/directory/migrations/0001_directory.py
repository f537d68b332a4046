"""directory: directory_profiles

Revision ID: directory_0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "directory_0001"
down_revision = None
branch_labels = ("directory",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "directory_profiles",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("avatar_file_id", sa.String(36), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("directory_profiles")
