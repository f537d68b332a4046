"""Conversations, participants and roles: create, list, view, settings, add, remove,
roles, leave; membership answers for every other part.

Contract: every method that touches a conversation checks membership first (the
audit's two BLOCKERs) — non-participants and unknown ids get the same 403
``not_a_participant``. Removal forgets the membership cache on every instance before
the removal is announced, unsubscribes the user's sockets, then tells observers
(``sc_participant_removed``, every instance). Never sees an HTTP request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from secureconnect.errors import Problem
from secureconnect.ids import new_id_str
from secureconnect.models import rfc3339, utcnow

from .activity import ActivityRecorder
from .announcements import Announcements
from .api import MODERATOR_ROLES as ADMIN_ROLES
from .api import TOPIC_PREFIX
from .conversations import (
    ConversationRepository,
    GroupFull,
    conversation_version,
    direct_key,
    member_version,
)
from .errors import AdminRequired, ChatInvalid, NotAParticipant, ParticipantNotFound
from .membership import MembershipCache
from .metrics import ChatMetrics
from .presence import presence_of
from .publisher import Publisher
from .settings import ChatSettings

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)


def user_id(value: Any) -> str:
    """The user id of a principal or connection (``.user_id``) or of a plain id."""
    return str(getattr(value, "user_id", value))


def _iso(value: datetime | None) -> str | None:
    return rfc3339(value)


class ConversationService:
    def __init__(
        self,
        kernel: Kernel,
        settings: ChatSettings,
        repo: ConversationRepository,
        metrics: ChatMetrics,
        *,
        publisher: Publisher,
        activity: ActivityRecorder,
        membership: MembershipCache,
        announce: Announcements,
    ) -> None:
        self.kernel = kernel
        self.settings = settings
        self.repo = repo
        self.metrics = metrics
        self.publisher = publisher
        self.activity = activity
        self.membership = membership
        self.announce = announce

    def topic(self, conversation_id: str) -> str:
        """The gateway topic of a conversation: ``conversation:<id>``."""
        return f"{TOPIC_PREFIX}{conversation_id}"

    async def is_participant(self, conversation_id: str, user_id: str) -> bool:
        return await self.repo.role_of(str(conversation_id), str(user_id)) is not None

    async def require_participant(self, conversation_id: str, user_id: str) -> str:
        """The caller's role (``owner``/``admin``/``member``), or 403 ``not_a_participant``
        — for unknown conversations too, so ids cannot be probed."""
        role = await self.repo.role_of(str(conversation_id), str(user_id))
        if role is None:
            raise self._not_a_participant()
        return role

    async def require_reader(self, conversation_id: str, user_id: str) -> str:
        """:meth:`require_participant` for the read paths: a "yes" comes from the read
        cache, valid until the user's participations change (removal, role) on any
        instance, and never while the bus is down. A "no" is never cached: it always
        asks the database."""
        conversation_id, user_id = str(conversation_id), str(user_id)
        cache = self.kernel.read_cache
        key = ("chat.role", conversation_id, user_id)
        role = cache.get(key)
        if role is None:
            stamp = cache.begin()
            role = await self.repo.role_of(conversation_id, user_id)
            if role is None:
                raise self._not_a_participant()
            cache.put(key, role, (member_version(user_id),), stamp)
        return str(role)

    def _not_a_participant(self) -> NotAParticipant:
        self.metrics.send_unauthorized.inc()
        return NotAParticipant(
            "you are not a participant of this conversation (or it does not exist)"
        )

    async def require_sender(self, conversation_id: str, user_id: str) -> None:
        """Membership on the send path, through the short-lived positive cache (see
        membership.py: removals forget at once, on every instance the bus reaches)."""
        if not await self.membership.check(
            conversation_id, user_id, lambda: self.is_participant(conversation_id, user_id)
        ):
            raise self._not_a_participant()

    async def create_conversation(
        self,
        creator_id: str,
        *,
        type_: str,
        participant_ids: Iterable[str],
        name: str | None = None,
        description: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``(conversation, created)``; a direct conversation that exists is returned."""
        creator_id = str(creator_id)
        others = [u for u in dict.fromkeys(str(u) for u in participant_ids) if u != creator_id]
        if type_ == "direct":
            if len(others) != 1:
                raise ChatInvalid(
                    "a direct conversation has exactly two users: give one other participant_id",
                    code="invalid_participants",
                )
            if name is not None or description is not None:
                raise ChatInvalid(
                    "direct conversations have no name or description", code="invalid_participants"
                )
        elif len(others) + 1 > self.settings.max_group_members:
            raise ChatInvalid(
                f"a group has at most {self.settings.max_group_members} participants "
                f"(chat.max_group_members), got {len(others) + 1}",
                code="group_too_large",
            )
        await self._require_users(others)
        now = utcnow()
        if type_ == "direct":
            existing = await self.repo.find_direct(creator_id, others[0])
            if existing is not None:
                return await self.conversation_view(existing, creator_id), False
            try:
                conv = await self.repo.create(
                    conversation_id=new_id_str(),
                    type_="direct",
                    creator_id=creator_id,
                    member_ids=others,
                    name=None,
                    description=None,
                    now=now,
                    key=direct_key(creator_id, others[0]),
                )
            except IntegrityError:
                # a concurrent request created the pair first: that one is the conversation
                existing = await self.repo.find_direct(creator_id, others[0])
                if existing is None:
                    raise
                return await self.conversation_view(existing, creator_id), False
        else:
            conv = await self.repo.create(
                conversation_id=new_id_str(),
                type_="group",
                creator_id=creator_id,
                member_ids=others,
                name=name,
                description=description,
                now=now,
            )
        topic = self.topic(conv["id"])
        for uid in [creator_id, *others]:
            await self.publisher.add_to_topic(uid, topic)
        view = await self.conversation_view(conv, creator_id)
        for uid in others:
            await self.publisher.publish(
                topic,
                "conversation.participant_added",
                {"conversation_id": conv["id"], "user_id": uid, "role": "member", "by": creator_id},
            )
        for uid in [creator_id, *others]:
            role = "owner" if uid == creator_id else "member"
            await self.announce.added(conv["id"], uid, role, creator_id)
        return view, True

    async def get_conversation(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        await self.require_participant(conversation_id, user_id)
        await self.activity.flush()
        conv = await self.repo.get(conversation_id)
        if conv is None:  # deleted between the two reads
            raise NotAParticipant("you are not a participant of this conversation")
        return await self.conversation_view(conv, str(user_id))

    async def list_conversations(
        self, user_id: str, *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return (await self._list(str(user_id), self._list_limit(limit)))[0]

    async def list_rendered(self, user_id: str, *, limit: int | None,
                            render: Callable[[list[dict[str, Any]]], bytes]) -> bytes:
        """``render(list_conversations(...))``, answered from the read cache while none
        of the user's participations and none of their conversations changed (a send
        anywhere moves that conversation's version: order, ``last_seq``, unread)."""
        user_id, limit = str(user_id), self._list_limit(limit)

        async def build() -> tuple[bytes, list[str]]:
            found, ids = await self._list(user_id, limit)
            if len(found) >= limit:
                # a conversation beyond the page moves into it with its next message
                ids = await self.repo.conversation_ids_of(user_id)
            deps = [member_version(user_id), *(conversation_version(c) for c in ids)]
            return render(found), deps

        body: bytes = await self.kernel.read_cache.fetch(("chat.conversations", user_id, limit),
                                                         build)
        return body

    def _list_limit(self, limit: int | None) -> int:
        return min(
            limit or self.settings.conversations_max_limit, self.settings.conversations_max_limit
        )

    async def _list(self, user_id: str, limit: int) -> tuple[list[dict[str, Any]], list[str]]:
        await self.activity.flush()
        rows = await self.repo.list_for_user(user_id, limit=limit)
        return [
            {
                **self._conversation_fields(r),
                "role": r["role"],
                "unread_count": max(0, int(r["unread_count"])),
                "last_read_seq": int(r["last_read_seq"]),
            }
            for r in rows
        ], [str(r["id"]) for r in rows]

    async def update_conversation(
        self, user_id: str, conversation_id: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        role = await self.require_participant(conversation_id, user_id)
        conv = await self.repo.get(conversation_id)
        assert conv is not None
        if conv["type"] != "group":
            raise ChatInvalid(
                "direct conversations have no settings to change", code="direct_conversation"
            )
        if role not in ADMIN_ROLES:
            raise AdminRequired("only the group's owner or admins change its settings")
        changes = {k: v for k, v in fields.items() if k in ("name", "description")}
        if changes:
            conv = await self.repo.update_settings(conversation_id, changes, utcnow())
            assert conv is not None
        view = await self.conversation_view(conv, str(user_id))
        await self.publisher.publish(
            self.topic(conversation_id), "conversation.updated", self._conversation_fields(conv)
        )
        return view

    async def add_participant(
        self, actor_id: str, conversation_id: str, user_id: str, role: str = "member"
    ) -> tuple[dict[str, Any], bool]:
        actor_role = await self.require_participant(conversation_id, actor_id)
        conv = await self.repo.get(conversation_id)
        assert conv is not None
        if conv["type"] != "group":
            raise ChatInvalid(
                "a direct conversation has exactly two participants", code="direct_conversation"
            )
        if actor_role not in ADMIN_ROLES:
            raise AdminRequired("only the group's owner or admins add participants")
        if role == "owner" or (role == "admin" and actor_role != "owner"):
            raise AdminRequired("only the owner makes admins; there is one owner")
        user_id = str(user_id)
        await self._require_users([user_id])
        try:
            added = await self.repo.add_participant(
                conversation_id,
                user_id,
                role,
                utcnow(),
                max_members=self.settings.max_group_members,
            )
        except GroupFull:
            raise ChatInvalid(
                f"the group is full ({self.settings.max_group_members} participants, "
                "chat.max_group_members)",
                code="group_full",
            ) from None
        current = await self.repo.role_of(conversation_id, user_id)
        participant = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "role": current or role,
        }
        if added:
            topic = self.topic(conversation_id)
            await self.publisher.add_to_topic(user_id, topic)
            await self.publisher.publish(
                topic, "conversation.participant_added", {**participant, "by": str(actor_id)}
            )
            await self.announce.added(conversation_id, user_id, participant["role"], str(actor_id))
        return participant, added

    async def remove_participant(
        self, actor_id: str, conversation_id: str, user_id: str
    ) -> dict[str, Any]:
        """An admin removes someone, or anyone leaves (``actor_id == user_id``)."""
        actor_id, user_id = str(actor_id), str(user_id)
        actor_role = await self.require_participant(conversation_id, actor_id)
        if actor_id != user_id:
            target_role = await self.repo.role_of(conversation_id, user_id)
            if target_role is None:
                raise ParticipantNotFound("that user is not a participant")
            if actor_role not in ADMIN_ROLES:
                raise AdminRequired("only the group's owner or admins remove participants")
            if target_role == "owner" or (target_role == "admin" and actor_role != "owner"):
                raise AdminRequired("admins cannot remove the owner or other admins")
        removed, new_owner = await self.repo.remove_participant(conversation_id, user_id)
        if not removed:
            raise ParticipantNotFound("that user is not a participant")
        topic = self.topic(conversation_id)
        # Sends stop being authorized from cache, and then the sockets are unsubscribed
        # (both on every instance): nothing published after this reaches them.
        await self.membership.forget(conversation_id, user_id)
        await self.publisher.remove_from_topic(user_id, topic)
        event = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "by": actor_id,
            "new_owner_id": new_owner,
        }
        await self.publisher.publish(topic, "conversation.participant_removed", event)
        await self.publisher.publish_to_user(user_id, "conversation.participant_removed", event)
        await self.announce.removed(conversation_id, user_id, actor_id)
        if not await self.repo.participant_ids(conversation_id):
            await self.announce.deleted(conversation_id)
        return event

    async def set_role(
        self, actor_id: str, conversation_id: str, user_id: str, role: str
    ) -> dict[str, Any]:
        actor_role = await self.require_participant(conversation_id, actor_id)
        if actor_role != "owner":
            raise AdminRequired("only the owner changes roles")
        if role == "owner" or str(user_id) == str(actor_id):
            raise ChatInvalid("the owner's role is passed on by leaving", code="invalid_role")
        if not await self.repo.set_role(conversation_id, str(user_id), role):
            raise ParticipantNotFound("that user is not a participant")
        event = {
            "conversation_id": conversation_id,
            "user_id": str(user_id),
            "role": role,
            "by": str(actor_id),
        }
        await self.publisher.publish(self.topic(conversation_id), "conversation.updated", event)
        return event

    async def leave_all(self, user_id: str) -> None:
        """The account is gone: leave every conversation (ownership passes on)."""
        for cid in await self.repo.conversation_ids_of(str(user_id)):
            try:
                await self.remove_participant(str(user_id), cid, str(user_id))
            except Problem:
                continue

    async def authorize_topic(self, user: Any, topic: str) -> bool | None:
        if not topic.startswith(TOPIC_PREFIX):
            return None
        if await self.is_participant(topic[len(TOPIC_PREFIX) :], user_id(user)):
            return True
        self.metrics.ws_unauthorized.inc()
        return False

    async def _require_users(self, user_ids: list[str]) -> None:
        """Every id must name an account (asked through ``kernel.auth.existing_user_ids``)."""
        if not user_ids:
            return
        found = await self.kernel.auth.existing_user_ids(user_ids)
        missing = [u for u in user_ids if u not in found]
        if missing:
            raise ChatInvalid(
                f"unknown user id(s): {', '.join(missing[:5])}",
                code="unknown_users",
                user_ids=missing[:20],
            )

    def _conversation_fields(self, conv: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": conv["id"],
            "type": conv["type"],
            "name": conv["name"],
            "description": conv["description"],
            "created_by": conv["created_by"],
            "created_at": _iso(conv["created_at"]),
            "updated_at": _iso(conv["updated_at"]),
            "last_message_at": _iso(conv["last_message_at"]),
            "last_seq": int(conv["last_seq"]),
        }

    async def conversation_view(self, conv: dict[str, Any], viewer_id: str) -> dict[str, Any]:
        members = await self.repo.participants(conv["id"])
        people = []
        mine: dict[str, Any] | None = None
        for m in members:
            entry = {
                "user_id": m["user_id"],
                "role": m["role"],
                "joined_at": _iso(m["joined_at"]),
                "last_read_seq": m["last_read_seq"],
                **await presence_of(self.kernel.cache, m["user_id"]),
            }
            people.append(entry)
            if m["user_id"] == viewer_id:
                mine = m
        last_read = int(mine["last_read_seq"]) if mine else 0
        return {
            **self._conversation_fields(conv),
            "role": None if mine is None else mine["role"],
            "unread_count": max(0, int(conv["last_seq"]) - last_read),
            "participants": people,
        }


__all__ = ["Callable", "ConversationService", "Iterable", "datetime", "user_id"]
