"""drive: drive_files, drive_quotas, drive_shares

Revision ID: drive_0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "drive_0001"
down_revision = None
branch_labels = ("drive",)
depends_on = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "drive_files",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("is_encrypted", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("upload_kind", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(8), nullable=False),
        sa.Column("multipart_id", sa.String(1024), nullable=True),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("completed_at", _utc(), nullable=True),
        sa.CheckConstraint("size >= 0", name="ck_drive_files_size_non_negative"),
        sa.CheckConstraint("status IN ('pending', 'ready')", name="ck_drive_files_status"),
        sa.PrimaryKeyConstraint("id", name="pk_drive_files"),
    )
    op.create_index("ix_drive_files_owner", "drive_files", ["owner_id", "created_at"])
    op.create_index("ix_drive_files_pending", "drive_files", ["status", "expires_at"])
    op.create_table(
        "drive_quotas",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("limit_bytes", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("used >= 0", name="ck_drive_quotas_used_non_negative"),
        sa.PrimaryKeyConstraint("user_id", name="pk_drive_quotas"),
    )
    op.create_table(
        "drive_shares",
        sa.Column("file_id", sa.String(36), nullable=False),
        sa.Column("conversation_id", sa.String(36), nullable=False),
        sa.Column("shared_by", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["drive_files.id"], ondelete="CASCADE",
            name="fk_drive_shares_file_id_drive_files",
        ),
        sa.PrimaryKeyConstraint("file_id", "conversation_id", name="pk_drive_shares"),
    )
    op.create_index("ix_drive_shares_conversation", "drive_shares", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_drive_shares_conversation", table_name="drive_shares")
    op.drop_table("drive_shares")
    op.drop_table("drive_quotas")
    op.drop_index("ix_drive_files_pending", table_name="drive_files")
    op.drop_index("ix_drive_files_owner", table_name="drive_files")
    op.drop_table("drive_files")
