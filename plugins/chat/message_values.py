"""The message store's value types and its opaque history cursor (see :mod:`.store` for
the contract): what the service, the SQL store and the Cassandra store pass around."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from secureconnect.models import rfc3339


@dataclass(frozen=True)
class NewMessage:
    """A message about to be stored (validated and guarded by the service)."""

    id: str
    conversation_id: str
    sender_id: str
    message_type: str
    content: str
    is_encrypted: bool
    metadata: dict[str, Any] | None
    file_id: str | None
    created_at: datetime
    idempotency_key: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    message_type: str
    content: str | None
    is_encrypted: bool
    metadata: dict[str, Any] | None
    file_id: str | None
    created_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def as_dict(self) -> dict[str, Any]:
        """The client representation (JSON-ready)."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "message_type": self.message_type,
            "content": self.content,
            "is_encrypted": self.is_encrypted,
            "metadata": self.metadata,
            "file_id": self.file_id,
            "created_at": rfc3339(self.created_at),
            "edited_at": rfc3339(self.edited_at),
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class Page:
    messages: list[StoredMessage] = field(default_factory=list)
    #: pass back as ``before`` for the next (older) page; ``None`` when there is none
    next_cursor: str | None = None


class InvalidCursor(ValueError):
    """The cursor was not produced by this store (or was tampered with)."""


_CURSOR_PREFIX = "s1:"


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("the cursor is not one this server produced") from None
    digits = raw[len(_CURSOR_PREFIX) :]
    # ASCII digits only ("²" is a digit to str.isdigit), and within a BIGINT
    if (not raw.startswith(_CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit()
            or len(digits) > 18):
        raise InvalidCursor("the cursor is not one this server produced")
    return int(digits)
