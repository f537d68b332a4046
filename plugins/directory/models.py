"""The directory's one table: what a profile adds to an account (the avatar).

The display name stays in the kernel's ``users`` table (the auth service renames);
a row here exists only once a user sets an avatar, and goes with the account
(``sc_user_deleted``; like every plugin, no foreign key into the kernel's tables).
"""

from __future__ import annotations

from sqlalchemy import Column, Table

from secureconnect.models import ID, UtcDateTime, new_metadata

metadata = new_metadata()

profiles = Table(
    "directory_profiles",
    metadata,
    Column("user_id", ID, primary_key=True),
    # a drive file id; the directory stores it, drive decides who may download it
    Column("avatar_file_id", ID, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
)
