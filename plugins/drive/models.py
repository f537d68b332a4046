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

import os
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; stored naive on SQLite so SQL compares alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    """A time-ordered UUID (version 7, RFC 9562)."""
    millis = time.time_ns() // 1_000_000
    raw = bytearray(millis.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def utcnow() -> datetime:
    return datetime.now(UTC)


ID = String(36)

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
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("completed_at", UtcDateTime, nullable=True),
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
    Column("created_at", UtcDateTime, nullable=False),
)
Index("ix_drive_shares_conversation", shares.c.conversation_id)
