"""Sharing files into conversations (through chat's published interface only).

The owner shares a ready file into a conversation they belong to; that posts a
``file`` message (``file_id`` set) in the timeline. Who may then read the file is asked
of chat live on every access (:meth:`DriveService._readable`), so removing someone
from the conversation revokes their access at once. When the sharer leaves (or the
conversation is deleted) the share itself is dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from secureconnect.errors import Conflict

from .models import shares, utcnow
from .service import DriveService, FileNotFound, iso

log = logging.getLogger(__name__)


class ShareNotFound(FileNotFound):
    code = "share_not_found"


class Sharing:
    def __init__(self, drive: DriveService) -> None:
        self.drive = drive
        self.db = drive.kernel.db

    async def share(self, user_id: str, file_id: str, conversation_id: str
                    ) -> tuple[dict[str, Any], bool]:
        """Share into a conversation; returns (share, created). Sharing again is a no-op."""
        row = await self.drive._owned(user_id, file_id)
        if row.status != "ready":
            raise Conflict("only complete files can be shared", code="upload_incomplete")
        conversations = self.drive.conversations
        await conversations.require_participant(conversation_id, user_id)
        now = utcnow()
        try:
            async with self.db.session() as s:
                await s.execute(insert(shares).values(
                    file_id=file_id, conversation_id=conversation_id, shared_by=user_id,
                    created_at=now))
        except IntegrityError:
            return await self._existing(file_id, conversation_id), False
        try:
            message = await conversations.post_message(
                conversation_id, user_id, content=row.name, message_type="file",
                metadata={"file_id": file_id, "name": row.name, "size": int(row.size),
                          "content_type": row.content_type,
                          "is_encrypted": bool(row.is_encrypted)},
                file_id=file_id)
        except BaseException:
            async with self.db.session() as s:
                await s.execute(delete(shares).where(
                    shares.c.file_id == file_id, shares.c.conversation_id == conversation_id))
            raise
        message_id = message.get("id") if isinstance(message, dict) else None
        if message_id is not None:
            async with self.db.session() as s:
                await s.execute(update(shares).where(
                    shares.c.file_id == file_id, shares.c.conversation_id == conversation_id
                ).values(message_id=str(message_id)))
        return await self._existing(file_id, conversation_id), True

    async def _existing(self, file_id: str, conversation_id: str) -> dict[str, Any]:
        async with self.db.session() as s:
            r = (await s.execute(select(shares).where(
                shares.c.file_id == file_id,
                shares.c.conversation_id == conversation_id))).first()
        if r is None:
            raise ShareNotFound("no such share")
        return {"file_id": r.file_id, "conversation_id": r.conversation_id,
                "shared_by": r.shared_by, "message_id": r.message_id,
                "created_at": iso(r.created_at)}

    async def unshare(self, user_id: str, file_id: str, conversation_id: str) -> None:
        await self.drive._owned(user_id, file_id)
        async with self.db.session() as s:
            result = await s.execute(delete(shares).where(
                shares.c.file_id == file_id, shares.c.conversation_id == conversation_id))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise ShareNotFound("the file is not shared into that conversation")

    async def list_shares(self, user_id: str, file_id: str) -> list[dict[str, Any]]:
        await self.drive._owned(user_id, file_id)
        async with self.db.session() as s:
            rows = (await s.execute(select(shares).where(shares.c.file_id == file_id)
                                    .order_by(shares.c.created_at))).all()
        return [{"file_id": r.file_id, "conversation_id": r.conversation_id,
                 "shared_by": r.shared_by, "message_id": r.message_id,
                 "created_at": iso(r.created_at)} for r in rows]

    # -- chat's hooks ----------------------------------------------------------------------
    async def participant_removed(self, conversation_id: str, user_id: str) -> int:
        """The sharer left: their files leave the conversation too."""
        async with self.db.session() as s:
            result = await s.execute(delete(shares).where(
                shares.c.conversation_id == conversation_id, shares.c.shared_by == user_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def conversation_deleted(self, conversation_id: str) -> int:
        async with self.db.session() as s:
            result = await s.execute(delete(shares).where(
                shares.c.conversation_id == conversation_id))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
