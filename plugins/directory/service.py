"""The user directory: public profiles, exact-email look-up and co-member search.

Privacy rules (docs/directory.md):
* a profile never carries the email;
* ``?email=`` finds an account only by its exact normalised address (0 or 1 result,
  own rate-limit class ``user_lookup``), so the directory cannot be enumerated;
* ``?q=`` searches display-name prefixes only among people who share a conversation
  with the caller (Synapse's default);
* presence is shown only to people who share a conversation with the user (and to
  the user), and only while chat is enabled.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from secureconnect import Kernel
from secureconnect.auth import models as auth_models
from secureconnect.errors import NotFound, ValidationFailed
from secureconnect_plugins.chat.api import CONVERSATIONS, Conversations

from .models import profiles

users = auth_models.users


@dataclass(frozen=True)
class Profile:
    id: str
    display_name: str
    avatar_file_id: str | None
    presence: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "display_name": self.display_name,
                "avatar_file_id": self.avatar_file_id, "presence": self.presence}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def encode_cursor(name: str, user_id: str) -> str:
    raw = json.dumps([name, user_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, user_id = json.loads(raw)
        if isinstance(name, str) and isinstance(user_id, str):
            return name, user_id
    except (binascii.Error, ValueError, TypeError):
        pass
    raise ValidationFailed("cursor is not one this server handed out", code="invalid_cursor")


class DirectoryService:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def _chat(self) -> Conversations | None:
        return self.kernel.require(CONVERSATIONS) if self.kernel.provides(CONVERSATIONS) else None

    async def _avatars(self, user_ids: list[str]) -> dict[str, str | None]:
        if not user_ids:
            return {}
        async with self.kernel.db.connect() as conn:
            rows = await conn.execute(
                select(profiles.c.user_id, profiles.c.avatar_file_id)
                .where(profiles.c.user_id.in_(user_ids)))
            return {r.user_id: r.avatar_file_id for r in rows}

    async def _shares_conversation(self, chat: Conversations, a: str, b: str) -> bool:
        if a == b:
            return True
        mine = set(await chat.conversations_of(a))
        return bool(mine) and not mine.isdisjoint(await chat.conversations_of(b))

    async def _presence(self, viewer: str, user_id: str) -> dict[str, Any] | None:
        chat = self._chat()
        if chat is None or not await self._shares_conversation(chat, viewer, user_id):
            return None
        return {"online": await chat.is_online(user_id)}

    async def profile(self, viewer: str, user_id: str) -> Profile:
        row = None
        if len(user_id) <= 64:
            async with self.kernel.db.connect() as conn:
                row = (await conn.execute(
                    select(users.c.id, users.c.display_name).where(users.c.id == user_id))).first()
        if row is None:
            raise NotFound("no such user", code="user_not_found")
        avatars = await self._avatars([row.id])
        return Profile(row.id, row.display_name, avatars.get(row.id),
                       await self._presence(viewer, row.id))

    async def by_email(self, viewer: str, email: str) -> list[Profile]:
        await self.kernel.rate_limits.hit("user_lookup", f"user:{viewer}")
        try:
            address = self.kernel.auth.normalise_email(email)
        except ValidationFailed:
            return []  # not an address: nobody has it
        async with self.kernel.db.connect() as conn:
            row = (await conn.execute(
                select(users.c.id).where(users.c.email == address))).first()
        return [] if row is None else [await self.profile(viewer, row.id)]

    async def search(self, viewer: str, text: str, limit: int,
                     cursor: str | None) -> tuple[list[Profile], str | None]:
        """Display-name prefix (case-insensitive) among the caller's co-members, by
        name then id; ``next_cursor`` while more may follow."""
        chat = self._chat()
        if chat is None:
            return [], None
        people: set[str] = set()
        for conversation_id in await chat.conversations_of(viewer):
            people.update(p.user_id for p in await chat.participants(conversation_id))
        people.discard(viewer)
        if not people:
            return [], None
        key = func.lower(users.c.display_name)
        query = (select(users.c.id, users.c.display_name, key.label("key"))
                 .where(users.c.id.in_(sorted(people)),
                        key.like(_escape_like(text.lower()) + "%", escape="\\"))
                 .order_by(key, users.c.id).limit(limit + 1))
        if cursor:
            after_key, after_id = decode_cursor(cursor)
            query = query.where(or_(key > after_key, and_(key == after_key, users.c.id > after_id)))
        async with self.kernel.db.connect() as conn:
            rows = list(await conn.execute(query))
        more = len(rows) > limit
        rows = rows[:limit]
        avatars = await self._avatars([r.id for r in rows])
        found = [Profile(r.id, r.display_name, avatars.get(r.id),
                         {"online": await chat.is_online(r.id)}) for r in rows]
        return found, encode_cursor(rows[-1].key, rows[-1].id) if more else None

    async def update_me(self, user_id: str, fields: dict[str, Any]) -> Profile:
        if "display_name" in fields:
            await self.kernel.auth.set_display_name(user_id, fields["display_name"])
        if "avatar_file_id" in fields:
            await self._set_avatar(user_id, fields["avatar_file_id"])
        return await self.profile(user_id, user_id)

    async def _set_avatar(self, user_id: str, file_id: str | None) -> None:
        now = self.kernel.auth.now()
        async with self.kernel.db.connect() as conn:
            done = await conn.execute(update(profiles).where(profiles.c.user_id == user_id)
                                      .values(avatar_file_id=file_id, updated_at=now))
            if not done.rowcount:
                await conn.execute(insert(profiles).values(
                    user_id=user_id, avatar_file_id=file_id, updated_at=now))

    async def forget(self, user_id: str) -> None:
        async with self.kernel.db.connect() as conn:
            await conn.execute(delete(profiles).where(profiles.c.user_id == user_id))
