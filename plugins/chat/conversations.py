"""Conversations and their participants in the relational database.

All SQL about conversations lives here (the service holds the rules, this module the
statements). Every state change is one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .models import conversations, participants
from .store import maybe_locked

if TYPE_CHECKING:
    from secureconnect.store.readcache import ReadCache
    from secureconnect.store.sql import Database

c = conversations.c
p = participants.c

# the reads of every request, built once (bound per call)
_BY_ID = select(conversations).where(c.id == bindparam("cid"))
_ROLE = select(p.role).where(p.conversation_id == bindparam("cid"), p.user_id == bindparam("uid"))
_PARTICIPANT_IDS = select(p.user_id).where(p.conversation_id == bindparam("cid"))
# ordered: leaving them all (account deletion) visits them in a known order
_CONVERSATION_IDS = (select(p.conversation_id).where(p.user_id == bindparam("uid"))
                     .order_by(p.conversation_id))
_OF_USER = (
    select(conversations, p.role, p.last_read_seq,
           (c.last_seq - p.last_read_seq).label("unread_count"))
    .join(participants, and_(p.conversation_id == c.id, p.user_id == bindparam("uid")))
    .order_by(func.coalesce(c.last_message_at, c.created_at).desc(), c.id.desc())
    .limit(bindparam("limit", type_=Integer))
)


def conversation_version(conversation_id: str) -> str:
    """Read-cache key of a conversation's row and its messages (store/readcache.py):
    moved by settings, membership changes, activity and every message write."""
    return f"chat:conversation:{conversation_id}"


def member_version(user_id: str) -> str:
    """Read-cache key of a user's participations (which conversations, role, read
    marker): moved whenever one of the user's participant rows changes."""
    return f"chat:member:{user_id}"


def direct_key(a: str, b: str) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


class ConversationRepository:
    """Every write moves the read-cache versions of what it changed once it is
    committed (or rolled back: a needless move only costs a miss), before the service
    announces the change — an instance that hears the event has the versions already."""

    def __init__(self, db: Database, *, write_lock: asyncio.Lock | None = None,
                 read_cache: ReadCache | None = None) -> None:
        self.db = db
        #: shared with the message store on SQLite (one writer), see SqlMessageStore
        self.write_lock = write_lock
        self.read_cache = read_cache

    async def changed(self, *keys: str) -> None:
        if self.read_cache is not None:
            await self.read_cache.invalidate(*keys)

    # -- create -------------------------------------------------------------------------
    async def create(
        self,
        *,
        conversation_id: str,
        type_: str,
        creator_id: str,
        member_ids: Iterable[str],
        name: str | None,
        description: str | None,
        now: datetime,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Insert a conversation with the creator as owner and the others as members.
        Raises ``IntegrityError`` when ``key`` (a direct pair) exists already."""
        members = list(dict.fromkeys([creator_id, *member_ids]))
        try:
            await self._insert(conversation_id, type_, creator_id, members, name,
                               description, now, key)
        finally:
            await self.changed(conversation_version(conversation_id),
                               *(member_version(u) for u in members))
        conv = await self.get(conversation_id)
        assert conv is not None
        return conv

    async def _insert(self, conversation_id: str, type_: str, creator_id: str,
                      members: list[str], name: str | None, description: str | None,
                      now: datetime, key: str | None) -> None:
        async with self.db.connect() as conn:
            await conn.execute(
                insert(conversations).values(
                    id=conversation_id,
                    type=type_,
                    name=name,
                    description=description,
                    direct_key=key,
                    created_by=creator_id,
                    created_at=now,
                    updated_at=now,
                    last_message_at=None,
                    last_seq=0,
                )
            )
            rows = [
                {
                    "conversation_id": conversation_id,
                    "user_id": uid,
                    "role": "owner" if uid == creator_id else "member",
                    "joined_at": now,
                    "last_read_seq": 0,
                }
                for uid in members
            ]
            await conn.execute(insert(participants), rows)

    async def find_direct(self, a: str, b: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(
            select(conversations).where(c.direct_key == direct_key(a, b)))
        return None if row is None else dict(row._mapping)

    # -- read ---------------------------------------------------------------------------
    async def get(self, conversation_id: str) -> dict[str, Any] | None:
        row = await self.db.fetch_one(_BY_ID, {"cid": conversation_id})
        return None if row is None else dict(row._mapping)

    async def role_of(self, conversation_id: str, user_id: str) -> str | None:
        row = await self.db.fetch_one(_ROLE, {"cid": conversation_id, "uid": user_id})
        return None if row is None else str(row[0])

    async def participants(self, conversation_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            select(p.user_id, p.role, p.joined_at, p.last_read_seq, p.last_read_message_id)
            .where(p.conversation_id == conversation_id)
            .order_by(p.joined_at, p.user_id)
        )
        return [dict(r._mapping) for r in rows]

    async def participant_ids(self, conversation_id: str) -> list[str]:
        rows = await self.db.fetch(_PARTICIPANT_IDS, {"cid": conversation_id})
        return [str(r[0]) for r in rows]

    async def conversation_ids_of(self, user_id: str) -> list[str]:
        rows = await self.db.fetch(_CONVERSATION_IDS, {"uid": user_id})
        return [str(r[0]) for r in rows]

    async def list_for_user(self, user_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The user's conversations, newest activity first, with ``unread_count``.

        Unread = messages after the user's read marker; sending advances the sender's
        own marker, so one's own messages never count.
        """
        rows = await self.db.fetch(_OF_USER, {"uid": user_id, "limit": limit})
        return [dict(r._mapping) for r in rows]

    async def unread_count(self, conversation_id: str, user_id: str) -> int:
        row = await self.db.fetch_one(
            select(c.last_seq - p.last_read_seq)
            .join(participants, p.conversation_id == c.id)
            .where(c.id == conversation_id, p.user_id == user_id)
        )
        return 0 if row is None else max(0, int(row[0]))

    # -- change -------------------------------------------------------------------------
    async def update_settings(
        self, conversation_id: str, fields: dict[str, Any], now: datetime
    ) -> dict[str, Any] | None:
        try:
            async with self.db.connect() as conn:
                await conn.execute(
                    update(conversations)
                    .where(c.id == conversation_id)
                    .values(**fields, updated_at=now)
                )
        finally:
            await self.changed(conversation_version(conversation_id))
        return await self.get(conversation_id)

    async def add_participant(
        self, conversation_id: str, user_id: str, role: str, now: datetime, *, max_members: int
    ) -> bool:
        """Add unless present; ``False`` if already a participant. Raises
        :class:`GroupFull` when the group has ``max_members`` participants."""
        try:
            return await self._add_participant(conversation_id, user_id, role, now,
                                               max_members)
        finally:
            await self.changed(conversation_version(conversation_id), member_version(user_id))

    async def _add_participant(self, conversation_id: str, user_id: str, role: str,
                               now: datetime, max_members: int) -> bool:
        async with self.db.connect() as conn:
            # bump updated_at first: serialises concurrent adds to one group so the
            # member count below cannot be overtaken
            await conn.execute(
                update(conversations).where(c.id == conversation_id).values(updated_at=now)
            )
            exists = (
                await conn.execute(
                    select(p.role).where(p.conversation_id == conversation_id, p.user_id == user_id)
                )
            ).first()
            if exists is not None:
                return False
            count = (
                await conn.execute(select(func.count()).where(p.conversation_id == conversation_id))
            ).scalar_one()
            if int(count) >= max_members:
                raise GroupFull(int(count))
            last_seq = (
                await conn.execute(select(c.last_seq).where(c.id == conversation_id))
            ).scalar_one()
            try:
                await conn.execute(
                    insert(participants).values(
                        conversation_id=conversation_id,
                        user_id=user_id,
                        role=role,
                        joined_at=now,
                        # history before joining is not "unread"
                        last_read_seq=int(last_seq),
                    )
                )
            except IntegrityError:
                return False
        return True

    async def remove_participant(
        self, conversation_id: str, user_id: str
    ) -> tuple[bool, str | None]:
        """Remove ``user_id``; ``(removed, new_owner_id)`` — when the owner leaves,
        ownership passes to the longest-standing admin, else the longest-standing member."""
        outcome: tuple[bool, str | None] = (False, None)
        try:
            outcome = await self._remove_participant(conversation_id, user_id)
        finally:
            heir = () if outcome[1] is None else (member_version(outcome[1]),)
            await self.changed(conversation_version(conversation_id), member_version(user_id),
                               *heir)
        return outcome

    async def _remove_participant(
        self, conversation_id: str, user_id: str
    ) -> tuple[bool, str | None]:
        new_owner: str | None = None
        async with self.db.connect() as conn:
            role = (
                await conn.execute(
                    delete(participants)
                    .where(p.conversation_id == conversation_id, p.user_id == user_id)
                    .returning(p.role)
                )
            ).first()
            if role is None:
                return False, None
            if role[0] == "owner":
                heir = (
                    await conn.execute(
                        select(p.user_id)
                        .where(p.conversation_id == conversation_id)
                        .order_by((p.role == "admin").desc(), p.joined_at, p.user_id)
                        .limit(1)
                    )
                ).first()
                if heir is not None:
                    new_owner = str(heir[0])
                    await conn.execute(
                        update(participants)
                        .where(p.conversation_id == conversation_id, p.user_id == new_owner)
                        .values(role="owner")
                    )
        return True, new_owner

    async def set_role(self, conversation_id: str, user_id: str, role: str) -> bool:
        try:
            async with self.db.connect() as conn:
                result = await conn.execute(
                    update(participants)
                    .where(p.conversation_id == conversation_id, p.user_id == user_id)
                    .values(role=role)
                )
        finally:
            await self.changed(member_version(user_id))
        return bool(result.rowcount)

    async def record_activity(self, batch: dict[str, Activity]) -> None:
        """Per conversation: newest seq/time, and each sender's read marker moves to
        their newest message (one's own messages are never unread). Never moves
        backwards. The whole batch is one transaction in one hand-off (``db.write``)."""
        if batch:
            try:
                async with maybe_locked(self.write_lock):
                    await self.db.write(_record_activity, batch, quick=True)
            finally:
                await self.changed(
                    *(conversation_version(cid) for cid in batch),
                    *{member_version(uid) for a in batch.values() for uid in a.senders})

    async def mark_read(
        self, conversation_id: str, user_id: str, *, seq: int, message_id: str
    ) -> bool:
        """Move the user's read marker forward to ``seq``; ``False`` if it was already there."""
        try:
            async with self.db.connect() as conn:
                result = await conn.execute(
                    update(participants)
                    .where(
                        p.conversation_id == conversation_id,
                        p.user_id == user_id,
                        p.last_read_seq < seq,
                    )
                    .values(last_read_seq=seq, last_read_message_id=message_id)
                )
        finally:
            await self.changed(member_version(user_id))
        return bool(result.rowcount)


class GroupFull(Exception):
    def __init__(self, count: int) -> None:
        super().__init__(f"the group has {count} participants")
        self.count = count


@dataclass
class Activity:
    """What sends changed in one conversation since the last write."""

    seq: int
    at: datetime
    #: sender id → (seq, message id) of their newest message
    senders: dict[str, tuple[int, str]] = field(default_factory=dict)


_ACTIVITY = (
    update(conversations)
    .where(c.id == bindparam("cid"), c.last_seq < bindparam("seq"))
    .values(last_seq=bindparam("seq"), last_message_at=bindparam("at"))
)
_READ_MARKER = (
    update(participants)
    .where(
        p.conversation_id == bindparam("cid"),
        p.user_id == bindparam("uid"),
        p.last_read_seq < bindparam("seq"),
    )
    .values(last_read_seq=bindparam("seq"), last_read_message_id=bindparam("mid"))
)


def _record_activity(conn: Connection, batch: dict[str, Activity]) -> None:
    conn.execute(
        _ACTIVITY, [{"cid": cid, "seq": a.seq, "at": a.at} for cid, a in batch.items()]
    )
    markers = [
        {"cid": cid, "uid": uid, "seq": seq, "mid": mid}
        for cid, a in batch.items()
        for uid, (seq, mid) in a.senders.items()
    ]
    if markers:
        conn.execute(_READ_MARKER, markers)
