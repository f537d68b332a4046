"""The adapter behind chat's published interface (:class:`.api.Conversations`).

Other plugins get this object from ``kernel.require(CONVERSATIONS)``; it answers from
chat's repository, message store and presence, and hands out plain values
(:class:`.api.Participant`, :class:`.api.ConversationInfo`, :class:`.api.ChatMessage`)
— never the service, a row or a store object. Sends go through the service's full
send path (membership, limits, guards, persistence, delivery).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from secureconnect.models import rfc3339

from .api import (
    MODERATOR_ROLES,
    ChatMessage,
    ConversationInfo,
    MessageText,
    Participant,
    Role,
)

if TYPE_CHECKING:
    from .service import ChatService

#: the most messages one ``messages`` call returns (a bound for every caller)
MAX_MESSAGES = 10_000
#: rows one read of ``messages`` fetches; the reads of a long window take turns with
#: other work on the event loop (SQLite reads small pages on the loop itself, and
#: building a row's message costs some 15-20 µs: a page of 50 is about a millisecond of
#: the loop, so a chat send waiting behind it waits no longer than behind another send)
_PAGE = 50
#: between the pages of a long read, a pause of this many times the loop-thread CPU the
#: page took: a long window (an AI summary reads 2,000 messages) takes at most about a
#: fifth of the loop while it is read, instead of a step in every turn of the loop —
#: a chat send, which needs several turns, would meet one page in each of them
_PAUSE_FACTOR = 4
#: rows one read of ``texts`` fetches: a text row costs 3-5 µs, not 15-20, so a page is
#: about 0.2 ms of the loop. Short steps matter more than few: a chat send that meets one
#: waits for it, and at 1 summary/s about 1 % of the sends meet one — where the p99 sits
#: (bench/ai.py: pages of 100 and 250-line steps, busy/idle p99 1.21 against a placebo of
#: 0.98; pages of 50 and 125-line steps, 1.13 against 0.95, pooled 1.06-1.08)
_TEXT_PAGE = 50
_MAX_PAUSE = 0.02
#: the largest seq the schema holds (a 32-bit INTEGER column on PostgreSQL)
_MAX_SEQ = 2**31 - 1


class ChatConversations:
    """Implements :class:`.api.Conversations` over a :class:`.service.ChatService`."""

    def __init__(self, service: ChatService) -> None:
        self._service = service
        self._members = service.conversations
        self._repo = service.repo

    def topic(self, conversation_id: str) -> str:
        return self._members.topic(conversation_id)

    async def is_participant(self, conversation_id: str, user_id: str) -> bool:
        return await self._members.is_participant(conversation_id, user_id)

    async def require_participant(self, conversation_id: str, user_id: str) -> Role:
        return cast(Role, await self._members.require_participant(conversation_id, user_id))

    async def can_moderate(self, user_id: str, conversation_id: str) -> bool:
        return await self._repo.role_of(str(conversation_id), str(user_id)) in MODERATOR_ROLES

    async def participants(self, conversation_id: str) -> list[Participant]:
        rows = await self._repo.participants(str(conversation_id))
        return [Participant(str(r["user_id"]), cast(Role, r["role"])) for r in rows]

    async def conversation(self, conversation_id: str) -> ConversationInfo | None:
        row = await self._repo.get(str(conversation_id))
        if row is None:
            return None
        return ConversationInfo(str(row["id"]), row["type"], row.get("name"))

    async def conversations_of(self, user_id: str) -> list[str]:
        return await self._repo.conversation_ids_of(str(user_id))

    async def post_message(
        self,
        conversation_id: str,
        sender_id: str,
        *,
        content: str,
        message_type: str = "system",
        metadata: dict[str, Any] | None = None,
        file_id: str | None = None,
    ) -> dict[str, Any]:
        return await self._service.post_message(
            conversation_id, sender_id, content=content, message_type=message_type,
            metadata=metadata, file_id=file_id,
        )

    async def messages(
        self, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[ChatMessage]:
        limit = max(1, min(int(limit), MAX_MESSAGES))
        found: list[ChatMessage] = []
        cursor: str | None = None
        while len(found) < limit:
            cpu = time.thread_time()
            page = await self._service.store.page(
                str(conversation_id), before=cursor, limit=min(_PAGE, limit - len(found))
            )
            newer = [m for m in page.messages if m.seq > after_seq]
            found.extend(
                ChatMessage(
                    id=m.id, conversation_id=m.conversation_id, seq=m.seq,
                    sender_id=m.sender_id, message_type=m.message_type,
                    content=None if m.deleted else m.content, is_encrypted=m.is_encrypted,
                    metadata=m.metadata, file_id=m.file_id,
                    created_at=str(rfc3339(m.created_at)),
                )
                for m in newer
            )
            if page.next_cursor is None or len(newer) < len(page.messages):
                break
            cursor = page.next_cursor
            await _breathe(cpu)
        found.reverse()
        return found

    async def texts(
        self, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[MessageText]:
        limit = max(1, min(int(limit), MAX_MESSAGES))
        if after_seq >= _MAX_SEQ:
            return []  # (nothing is stored there; and the bound would not fit the column)
        store = self._service.store
        found: list[MessageText] = []
        before: int | None = None
        while len(found) < limit:
            cpu = time.thread_time()
            want = min(_TEXT_PAGE, limit - len(found))
            page = await store.text_page(str(conversation_id), after_seq=after_seq,
                                         before_seq=before, limit=want)
            found += page
            if len(page) < want:
                break
            before = page[-1].seq
            await _breathe(cpu)
        found.reverse()
        return found

    async def unread_count(self, conversation_id: str, user_id: str) -> int:
        await self._service.activity.flush()  # the newest seq is written in batches
        return await self._repo.unread_count(str(conversation_id), str(user_id))

    async def is_online(self, user_id: str) -> bool:
        return bool((await self._service.presence.presence_of(str(user_id)))["online"])


async def _breathe(cpu_at_start: float) -> None:
    """Between the pages of a long read: let other requests run, for ``_PAUSE_FACTOR``
    times the loop-thread CPU the page took since ``cpu_at_start``."""
    await asyncio.sleep(min(_MAX_PAUSE, (time.thread_time() - cpu_at_start) * _PAUSE_FACTOR))
