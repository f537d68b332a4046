"""The drive schema: files, per-user quota counters, shares into conversations.

* ``drive_files`` — one row per file from its reservation on. ``status`` is
  ``pending`` until the stored object was verified (``ready``). ``received`` is the tus
  offset (resumable uploads on the local back end); ``multipart_id`` the S3 multipart
  upload of a large file. ``expires_at`` bounds a pending reservation: past it, the
  cleanup job deletes the row and the object and releases the quota.
* ``drive_quotas`` — ``used`` counts the bytes of every pending and ready file of the
  user (reserved up front, so parallel uploads can never overrun the limit; see
  owncloud/client#5027). ``limit_bytes`` overrides the default quota when not NULL.
  Reservation is one conditional ``UPDATE ... WHERE used + n <= limit``.
* ``drive_shares`` — a file shared into a conversation; who may read it is decided live
  from the conversation's membership, never copied here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
)

from secureconnect.models import ID, UtcDateTime, new_id, new_metadata, utcnow

__all__ = ["files", "metadata", "new_id", "quotas", "shares", "utcnow"]

metadata = new_metadata()

files = Table(
    "drive_files",
    metadata,
    Column("id", ID, primary_key=True),
    Column("owner_id", ID, nullable=False),
    Column("name", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content_type", String(255), nullable=False),
    # lower-case hex the client declared; checked on complete when given
    Column("sha256", String(64), nullable=True),
    Column("is_encrypted", Boolean, nullable=False, default=False),
    Column("status", String(16), nullable=False),
    # "single" (one presigned PUT), "multipart" (S3 parts), "tus" (resumable, local)
    Column("upload_kind", String(16), nullable=False),
    Column("backend", String(8), nullable=False),
    Column("multipart_id", String(1024), nullable=True),
    Column("received", BigInteger, nullable=False, default=0),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("completed_at", UtcDateTime(), nullable=True),
    CheckConstraint("size >= 0", name="size_non_negative"),
    CheckConstraint("status IN ('pending', 'ready')", name="status"),
)
Index("ix_drive_files_owner", files.c.owner_id, files.c.created_at)
# the cleanup job scans pending reservations by deadline
Index("ix_drive_files_pending", files.c.status, files.c.expires_at)

quotas = Table(
    "drive_quotas",
    metadata,
    Column("user_id", ID, primary_key=True),
    Column("used", BigInteger, nullable=False, default=0),
    Column("limit_bytes", BigInteger, nullable=True),
    CheckConstraint("used >= 0", name="used_non_negative"),
)

shares = Table(
    "drive_shares",
    metadata,
    Column("file_id", ID, ForeignKey("drive_files.id", ondelete="CASCADE"), primary_key=True),
    Column("conversation_id", ID, primary_key=True),
    Column("shared_by", ID, nullable=False),
    Column("message_id", String(64), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
)
Index("ix_drive_shares_conversation", shares.c.conversation_id)
