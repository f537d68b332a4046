"""Chat logic: conversations, membership, messages, receipts, typing, presence.

Never sees an HTTP request. Every public method that touches a conversation checks
membership first (the audit's two BLOCKERs): non-participants — and callers naming a
conversation that does not exist, so ids cannot be probed — get 403
``not_a_participant`` and ``chat_message_send_unauthorized_total`` moves.

Send path (``send_message``): validate → membership → idempotency look-up → guards
(``sc_message_will_be_sent``, fail closed) → persist (seq allocated by the store) →
conversation activity → publish to ``conversation:<id>`` (failures counted, never fail
the send) → ``sc_message_sent`` in an owned background task (failures logged and
counted, never fail the send).

Other plugins use this object through ``kernel.require("chat.conversations")``; the
methods of that interface are marked "For other plugins" (see docs/chat.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from secureconnect import Veto, hooks
from secureconnect.errors import Conflict, Forbidden, NotFound, Problem, Unprocessable
from secureconnect.ids import new_id_str
from secureconnect.models import rfc3339, utcnow

from .activity import ActivityRecorder
from .announcements import Announcements
from .conversations import ConversationRepository, GroupFull, direct_key
from .membership import MembershipCache
from .metrics import ChatMetrics
from .store import InvalidCursor, MessageStore, NewMessage, StoredMessage

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

#: how the gateway's encoder starts a chat.message frame (``type`` comes first)
_MESSAGE_FRAME = '{"type":"chat.message"'

TOPIC_PREFIX = "conversation:"
CLIENT_MESSAGE_TYPES = frozenset({"text", "image", "video", "file"})
#: types only the server and plugins may post (``post_message``), never clients
PLUGIN_MESSAGE_TYPES = frozenset({*CLIENT_MESSAGE_TYPES, "system", "poll"})
ADMIN_ROLES = frozenset({"owner", "admin"})


# -- errors ---------------------------------------------------------------------------
class NotAParticipant(Forbidden):
    code = "not_a_participant"


class AdminRequired(Forbidden):
    code = "admin_required"


class NotTheSender(Forbidden):
    code = "not_the_sender"


class MessageNotFound(NotFound):
    code = "message_not_found"


class ParticipantNotFound(NotFound):
    code = "participant_not_found"


class MessageTooLarge(Problem):
    status, code, title = 413, "message_too_large", "Payload Too Large"


class ChatInvalid(Unprocessable):
    code = "validation_error"


class MessageRejected(Problem):
    status, code, title = 503, "message_rejected", "Message Rejected"


# -- settings -------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatSettings:
    max_group_members: int
    max_content_bytes: dict[str, int]
    max_metadata_bytes: int
    history_default_limit: int
    history_max_limit: int
    conversations_max_limit: int
    typing_ttl: float
    typing_throttle: float
    last_seen_ttl: float
    presence_ttl: float
    max_pending_notifications: int
    membership_cache_ttl: float = 0.0
    membership_cache_size: int = 100_000
    activity_flush_interval: float = 0.0

    @classmethod
    def from_settings(cls, t: Any) -> ChatSettings:
        return cls(
            max_group_members=int(t.max_group_members),
            max_content_bytes={str(k): int(v) for k, v in dict(t.max_content_bytes).items()},
            max_metadata_bytes=int(t.max_metadata_bytes),
            history_default_limit=int(t.history_default_limit),
            history_max_limit=int(t.history_max_limit),
            conversations_max_limit=int(t.conversations_max_limit),
            typing_ttl=float(t.typing_ttl),
            typing_throttle=float(t.typing_throttle),
            last_seen_ttl=float(t.last_seen_ttl),
            presence_ttl=float(t.presence_ttl),
            max_pending_notifications=int(t.max_pending_notifications),
            membership_cache_ttl=float(t.membership_cache_ttl),
            membership_cache_size=int(t.membership_cache_size),
            activity_flush_interval=float(t.activity_flush_interval),
        )


@dataclass(frozen=True)
class Draft:
    """A message as a client (or plugin) asked for it; shape already checked."""

    content: str
    message_type: str = "text"
    is_encrypted: bool = False
    metadata: dict[str, Any] | None = None
    file_id: str | None = None


class Ticket:
    """A place in a key's line, in two steps. ``await ticket.submit_turn()`` waits until
    every earlier ticket of the key has *submitted* its work (:meth:`submitted`);
    ``async with ticket:`` waits until every earlier ticket is *done*. Leaving (or
    :meth:`close`, for work that failed early) completes both steps for this ticket —
    never before the earlier tickets completed them."""

    __slots__ = ("_done", "_key", "_line", "_prev", "_submitted")

    def __init__(self, line: OrderedLines, key: str, prev: Ticket | None) -> None:
        loop = asyncio.get_running_loop()
        self._line, self._key, self._prev = line, key, prev
        self._submitted: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()

    async def submit_turn(self) -> None:
        prev = self._prev
        if prev is not None and not prev._submitted.done():
            # shielded: a cancelled waiter must not cancel its predecessor's future
            await asyncio.shield(prev._submitted)

    def submitted(self) -> None:
        """This ticket's work is submitted (call after :meth:`submit_turn`)."""
        if not self._submitted.done():
            self._submitted.set_result(None)

    async def turn(self) -> None:
        """Wait until every earlier ticket of the key is done."""
        prev = self._prev
        if prev is not None and not prev._done.done():
            await asyncio.shield(prev._done)

    async def __aenter__(self) -> Ticket:
        await self.turn()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._done.done():
            return
        prev = self._prev
        if prev is None:
            self._finish()
            return
        if prev._submitted.done():
            self.submitted()
        else:
            prev._submitted.add_done_callback(lambda _: self.submitted())
        if prev._done.done():
            self._finish()
        else:
            prev._done.add_done_callback(lambda _: self._finish())

    def _finish(self) -> None:
        self.submitted()
        if not self._done.done():
            self._done.set_result(None)
        self._prev = None  # a finished line keeps no chain of tickets alive
        self._line._done(self._key, self)


class OrderedLines:
    """One FIFO line per key (a conversation): places are taken synchronously, in the
    order requests arrive, and served in that order. Bounded by the keys with work in
    flight (a finished line is dropped)."""

    def __init__(self) -> None:
        self._tails: dict[str, Ticket] = {}

    def reserve(self, key: str) -> Ticket:
        ticket = Ticket(self, key, self._tails.get(key))
        self._tails[key] = ticket
        return ticket

    def _done(self, key: str, ticket: Ticket) -> None:
        if self._tails.get(key) is ticket:
            del self._tails[key]

    def __len__(self) -> int:
        return len(self._tails)


def _rewrite(message: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A guard's rewrite: only ``content`` (a string) and ``metadata`` are taken."""
    message = dict(message)
    if "content" in result:
        if not isinstance(result["content"], str):
            raise MessageRejected("a message guard rewrote content to a non-string")
        message["content"] = result["content"]
    if "metadata" in result:
        message["metadata"] = result["metadata"]
    return message


def _user(value: Any) -> str:
    """A user id from a Principal, a Connection's ``user_id``, a UUID or a string."""
    return str(getattr(value, "user_id", value))


def _iso(value: datetime | None) -> str | None:
    return rfc3339(value)


class ChatService:
    def __init__(
        self,
        kernel: Kernel,
        settings: ChatSettings,
        store: MessageStore,
        repo: ConversationRepository,
    ) -> None:
        self.kernel = kernel
        self.settings = settings
        self.store = store
        self.repo = repo
        self.metrics = ChatMetrics.build(kernel.metrics)
        # the send path's fixed-label series, bound once
        m = self.metrics
        self._took = {step: m.delivery_duration.labels(step)
                      for step in ("guard", "persist", "publish")}
        self._persisted_ok = m.persisted.labels("success")
        self._published_ok = m.published.labels("success")
        self._created: dict[tuple[str, bool], Any] = {}
        self._notifications: set[asyncio.Task[None]] = set()
        self._typing_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        # append → publish runs under the conversation's lock, so this instance
        # publishes a conversation's messages in seq order
        self._ordering = OrderedLines()
        self.activity = ActivityRecorder(repo, settings.activity_flush_interval)
        self.membership = MembershipCache(
            settings.membership_cache_ttl, settings.membership_cache_size
        )
        self.announce = Announcements(kernel)
        self._closed = False

    def start(self) -> None:
        self.activity.start()
        self.kernel.ws.on_dropped(self._count_dropped)

    def _count_dropped(self, _conn: Any, frames: list[str]) -> None:
        """A slow consumer's queue was dropped: count the chat messages in it (the
        client gets ``resync`` and re-reads history)."""
        lost = sum(1 for f in frames if f.startswith(_MESSAGE_FRAME))
        if lost:
            self.metrics.client_dropped.inc(lost)

    async def close(self) -> None:
        """Stop typing timers; give pending ``sc_message_sent`` calls a moment, then
        cancel them (every background task is owned)."""
        self._closed = True
        await self.announce.close()
        await self.membership.close()
        await self.activity.close()
        for handle in self._typing_timers.values():
            handle.cancel()
        self._typing_timers.clear()
        if self._notifications:
            _, pending = await asyncio.wait(set(self._notifications), timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    # =================================================================================
    # For other plugins (kernel.require("chat.conversations")) — keep these signatures
    # =================================================================================
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

    def _not_a_participant(self) -> NotAParticipant:
        self.metrics.send_unauthorized.inc()
        return NotAParticipant(
            "you are not a participant of this conversation (or it does not exist)"
        )

    async def _require_sender(self, conversation_id: str, user_id: str) -> None:
        """Membership on the send path, through the short-lived positive cache (see
        membership.py: removals forget at once, on every instance the bus reaches)."""
        if not await self.membership.check(
            conversation_id, user_id, lambda: self.is_participant(conversation_id, user_id)
        ):
            raise self._not_a_participant()

    async def participant_ids(self, conversation_id: str) -> list[str]:
        return await self.repo.participant_ids(str(conversation_id))

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
        """Put a plugin-originated message (``poll``, ``system``, ...) in the timeline,
        with the same membership check, guards, persistence and delivery as a client's."""
        message, _ = await self.send_message(
            str(sender_id),
            str(conversation_id),
            Draft(content=content, message_type=message_type, metadata=metadata,
                  file_id=file_id),
            origin="plugin",
        )
        return message

    # =================================================================================
    # Conversations
    # =================================================================================
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
            await self._add_to_topic(uid, topic)
        view = await self.conversation_view(conv, creator_id)
        for uid in others:
            await self._publish(
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
        limit = min(
            limit or self.settings.conversations_max_limit, self.settings.conversations_max_limit
        )
        await self.activity.flush()
        rows = await self.repo.list_for_user(str(user_id), limit=limit)
        return [
            {
                **self._conversation_fields(r),
                "role": r["role"],
                "unread_count": max(0, int(r["unread_count"])),
                "last_read_seq": int(r["last_read_seq"]),
            }
            for r in rows
        ]

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
        await self._publish(
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
            await self._add_to_topic(user_id, topic)
            await self._publish(
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
        await self._remove_from_topic(user_id, topic)
        event = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "by": actor_id,
            "new_owner_id": new_owner,
        }
        await self._publish(topic, "conversation.participant_removed", event)
        await self._publish_to_user(user_id, "conversation.participant_removed", event)
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
        await self._publish(self.topic(conversation_id), "conversation.updated", event)
        return event

    async def leave_all(self, user_id: str) -> None:
        """The account is gone: leave every conversation (ownership passes on)."""
        for cid in await self.repo.conversation_ids_of(str(user_id)):
            try:
                await self.remove_participant(str(user_id), cid, str(user_id))
            except Problem:
                continue

    # =================================================================================
    # Messages
    # =================================================================================
    async def send_message(
        self,
        sender_id: str,
        conversation_id: str,
        draft: Draft,
        *,
        idempotency_key: str | None = None,
        origin: str = "client",
        ticket: Ticket | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``(message, created)``; ``created`` is False when ``idempotency_key`` matched
        an earlier send (the original message comes back; nothing is published again).

        ``ticket`` is a place in the conversation's line taken when the request arrived
        (:meth:`reserve`), so that one client's pipelined sends keep their order; without
        one the place is taken now."""
        if ticket is None:
            ticket = self._ordering.reserve(str(conversation_id))
        try:
            return await self._send(sender_id, conversation_id, draft, idempotency_key,
                                    origin, ticket)
        finally:
            ticket.close()  # work that failed before its turn still lets the line move

    def reserve(self, conversation_id: str) -> Ticket:
        """Take the next place in a conversation's send line (synchronous)."""
        return self._ordering.reserve(str(conversation_id))

    async def _send(
        self,
        sender_id: str,
        conversation_id: str,
        draft: Draft,
        idempotency_key: str | None,
        origin: str,
        ticket: Ticket,
    ) -> tuple[dict[str, Any], bool]:
        started = time.perf_counter()
        sender_id, conversation_id = str(sender_id), str(conversation_id)
        allowed = CLIENT_MESSAGE_TYPES if origin == "client" else PLUGIN_MESSAGE_TYPES
        if draft.message_type not in allowed:
            raise ChatInvalid(
                f"message_type must be one of {', '.join(sorted(allowed))}, "
                f"got {draft.message_type!r}",
                code="invalid_message_type",
            )
        self._check_size(draft.message_type, draft.content, draft.metadata)
        await self._require_sender(conversation_id, sender_id)
        if idempotency_key is not None:
            earlier = await self.store.find(conversation_id, sender_id, idempotency_key)
            if earlier is not None:
                self.metrics.idempotency_hits.inc()
                return earlier.as_dict(), False
        guarded = await self._guard(
            {
                "conversation_id": conversation_id,
                "sender_id": sender_id,
                "message_type": draft.message_type,
                "content": draft.content,
                "is_encrypted": draft.is_encrypted,
                "metadata": draft.metadata,
                "file_id": draft.file_id,
                "origin": origin,
            }
        )
        content, metadata = guarded
        if content != draft.content or metadata != draft.metadata:
            self._check_size(draft.message_type, content, metadata)
        step = time.perf_counter()
        self._took["guard"].observe(step - started)
        new = NewMessage(
            id=new_id_str(),
            conversation_id=conversation_id,
            sender_id=sender_id,
            message_type=draft.message_type,
            content=content,
            is_encrypted=draft.is_encrypted,
            metadata=metadata,
            file_id=draft.file_id,
            created_at=utcnow(),
            idempotency_key=idempotency_key,
        )
        try:
            if self.store.ordered_appends:
                # Appends submitted in line order get their seqs in that order: the next
                # message may be submitted before this one is stored (one group commit
                # holds several), and the results of a commit wake their senders in
                # that order, so each finds its turn to publish already come.
                await ticket.submit_turn()
                appended = self.store.submit(new)
                ticket.submitted()
                # (cancelled by a timeout: the message is stored anyway, as it would be
                # by a send whose client went away)
                stored, created = await appended
                await ticket.turn()
            else:
                await ticket.turn()
                stored, created = await self.store.append(new)
        except Exception:
            self.metrics.persisted.labels("error").inc()
            raise
        # still this message's turn: the line moves on when send_message closes it
        if not created:
            self.metrics.idempotency_hits.inc()
            return stored.as_dict(), False
        now = time.perf_counter()
        self._took["persist"].observe(now - step)
        message = stored.as_dict()
        # the line moves on once this instance's sockets have the message: the next
        # one is posted after it, and the bus keeps that order across instances
        await self._publish(self.topic(conversation_id), "chat.message", message,
                            posted=ticket.close)
        self._took["publish"].observe(time.perf_counter() - now)
        self._persisted_ok.inc()
        if idempotency_key is not None:
            self.metrics.idempotency_misses.inc()
        created_of = (stored.message_type, stored.is_encrypted)
        counter = self._created.get(created_of)
        if counter is None:  # message types x two: bounded
            counter = self._created[created_of] = self.metrics.created.labels(
                stored.message_type, "true" if stored.is_encrypted else "false")
        counter.inc()
        self.activity.note(
            conversation_id,
            seq=stored.seq,
            at=stored.created_at,
            sender_id=sender_id,
            message_id=stored.id,
        )
        self._after_send(message)
        return message, True

    async def edit_message(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        *,
        content: str,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        stored = await self._own_message(user_id, conversation_id, message_id)
        if stored.deleted:
            raise Conflict("a deleted message cannot be edited", code="message_deleted")
        self._check_size(stored.message_type, content, metadata)
        content, metadata = await self._guard(
            {
                "conversation_id": conversation_id,
                "sender_id": str(user_id),
                "message_type": stored.message_type,
                "content": content,
                "is_encrypted": stored.is_encrypted,
                "metadata": metadata,
                "file_id": stored.file_id,
                "origin": "edit",
                "message_id": stored.id,
            }
        )
        edited = await self.store.edit(
            conversation_id, message_id, content=content, metadata=metadata, edited_at=utcnow()
        )
        if edited is None:
            raise Conflict("a deleted message cannot be edited", code="message_deleted")
        message = edited.as_dict()
        await self._publish(self.topic(conversation_id), "chat.message_updated", message)
        return message

    async def delete_message(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> dict[str, Any]:
        await self._own_message(user_id, conversation_id, message_id)
        tombstone = await self.store.delete(conversation_id, message_id, deleted_at=utcnow())
        if tombstone is None:
            raise MessageNotFound("no such message in this conversation")
        message = tombstone.as_dict()
        await self._publish(self.topic(conversation_id), "chat.message_deleted", message)
        return message

    async def history(
        self, user_id: str, conversation_id: str, *, before: str | None, limit: int | None
    ) -> dict[str, Any]:
        await self.require_participant(conversation_id, user_id)
        limit = max(
            1, min(limit or self.settings.history_default_limit, self.settings.history_max_limit)
        )
        try:
            page = await self.store.page(conversation_id, before=before, limit=limit)
        except InvalidCursor as exc:
            raise ChatInvalid(f"before: {exc}", code="invalid_cursor", status=400) from None
        return {"messages": [m.as_dict() for m in page.messages], "next_cursor": page.next_cursor}

    async def mark_read(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> dict[str, Any]:
        user_id = str(user_id)
        await self.require_participant(conversation_id, user_id)
        await self.activity.flush()
        stored = await self.store.get(conversation_id, message_id)
        if stored is None:
            raise MessageNotFound("no such message in this conversation")
        advanced = await self.repo.mark_read(
            conversation_id, user_id, seq=stored.seq, message_id=stored.id
        )
        receipt = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "message_id": stored.id,
            "seq": stored.seq,
        }
        if advanced:
            await self._publish(self.topic(conversation_id), "chat.read", receipt)
        unread = await self.repo.unread_count(conversation_id, user_id)
        return {**receipt, "unread_count": unread}

    # =================================================================================
    # Typing and presence
    # =================================================================================
    async def typing(self, user_id: str, conversation_id: str, state: str) -> dict[str, Any]:
        """Ephemeral, never stored. ``start`` is published at most once per
        ``typing_throttle`` seconds per user and conversation; a ``stop`` follows by
        itself ``typing_ttl`` seconds after the last ``start``."""
        user_id, conversation_id = str(user_id), str(conversation_id)
        await self.require_participant(conversation_id, user_id)
        key = (conversation_id, user_id)
        throttle_key = f"chat:typing:{conversation_id}:{user_id}"
        if state == "start":
            self._schedule_typing_stop(key)
            fresh = await self.kernel.cache.set_if_absent(
                throttle_key, "1", ttl=self.settings.typing_throttle
            )
            if not fresh:
                return {"published": False}
        else:
            handle = self._typing_timers.pop(key, None)
            if handle is not None:
                handle.cancel()
            await self.kernel.cache.delete(throttle_key)
        await self._publish(
            self.topic(conversation_id),
            "chat.typing",
            {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "state": state,
                "expires_in": self.settings.typing_ttl if state == "start" else 0,
            },
        )
        return {"published": True}

    def _schedule_typing_stop(self, key: tuple[str, str]) -> None:
        old = self._typing_timers.pop(key, None)
        if old is not None:
            old.cancel()
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        self._typing_timers[key] = loop.call_later(
            self.settings.typing_ttl, self._typing_expired, key
        )

    def _typing_expired(self, key: tuple[str, str]) -> None:
        self._typing_timers.pop(key, None)
        conversation_id, user_id = key
        self._spawn(self._expire_typing(conversation_id, user_id))

    async def _expire_typing(self, conversation_id: str, user_id: str) -> None:
        await self.kernel.cache.delete(f"chat:typing:{conversation_id}:{user_id}")
        await self._publish(
            self.topic(conversation_id),
            "chat.typing",
            {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "state": "stop",
                "expires_in": 0,
                "expired": True,
            },
        )

    async def connected(self, conn: Any) -> None:
        """Subscribe a new socket to its conversations; first socket → online."""
        user_id = _user(conn)
        conversation_ids = await self.repo.conversation_ids_of(user_id)
        for cid in conversation_ids:
            await conn.subscribe(self.topic(cid))
        self.metrics.online_users.inc()
        count = await self.kernel.cache.incr(
            self._presence_key(user_id), 1, ttl=self.settings.presence_ttl
        )
        if count == 1:
            await self._publish_presence(user_id, "online", None, conversation_ids)

    async def disconnected(self, conn: Any) -> None:
        """Last socket gone → offline. Runs as an owned task: the connection's own task
        may be cancelled while it closes, and presence must still be settled."""
        user_id = _user(conn)
        self.metrics.online_users.dec()
        for handle_key in [k for k in self._typing_timers if k[1] == user_id]:
            self._typing_timers.pop(handle_key).cancel()
        self._spawn(self._went_away(user_id))

    async def _went_away(self, user_id: str) -> None:
        count = await self.kernel.cache.incr(
            self._presence_key(user_id), -1, ttl=self.settings.presence_ttl
        )
        if count > 0:
            return
        await self.kernel.cache.delete(self._presence_key(user_id))
        last_seen = str(rfc3339(utcnow()))
        await self.kernel.cache.set(
            f"chat:last_seen:{user_id}", last_seen, ttl=self.settings.last_seen_ttl
        )
        conversation_ids = await self.repo.conversation_ids_of(user_id)
        await self._publish_presence(user_id, "offline", last_seen, conversation_ids)

    async def presence_of(self, user_id: str) -> dict[str, Any]:
        raw = await self.kernel.cache.get(self._presence_key(user_id))
        online = raw is not None and int(raw) > 0
        last_seen = None if online else await self.kernel.cache.get(f"chat:last_seen:{user_id}")
        return {"online": online, "last_seen_at": last_seen}

    @staticmethod
    def _presence_key(user_id: str) -> str:
        return f"chat:presence:{user_id}"

    async def _publish_presence(
        self, user_id: str, status: str, last_seen: str | None, conversation_ids: list[str]
    ) -> None:
        event = {"user_id": user_id, "status": status, "last_seen_at": last_seen}
        for cid in conversation_ids:
            await self._publish(
                self.topic(cid), "presence.update", {**event, "conversation_id": cid}
            )

    async def authorize_topic(self, user: Any, topic: str) -> bool | None:
        if not topic.startswith(TOPIC_PREFIX):
            return None
        if await self.is_participant(topic[len(TOPIC_PREFIX) :], _user(user)):
            return True
        self.metrics.ws_unauthorized.inc()
        return False

    # =================================================================================
    # helpers
    # =================================================================================
    def _check_size(self, message_type: str, content: str, metadata: dict[str, Any] | None) -> None:
        limit = self.settings.max_content_bytes.get(message_type, 0)
        size = len(content.encode("utf-8"))
        if size > limit:
            raise MessageTooLarge(
                f"{message_type} content is {size} bytes; the limit is {limit} bytes "
                f"(chat.max_content_bytes.{message_type})",
                limit=limit,
            )
        if metadata is not None:
            meta_size = len(json.dumps(metadata, separators=(",", ":")).encode())
            if meta_size > self.settings.max_metadata_bytes:
                raise MessageTooLarge(
                    f"metadata is {meta_size} bytes as JSON; the limit is "
                    f"{self.settings.max_metadata_bytes} bytes (chat.max_metadata_bytes)",
                    code="metadata_too_large",
                    limit=self.settings.max_metadata_bytes,
                )

    async def _guard(self, message: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Run the ``sc_message_will_be_sent`` guards (kernel order, fail closed). A Veto
        (or a Problem raised) refuses with that status; any other exception refuses
        with 503 ``message_rejected``."""
        try:
            message = await hooks.guard(
                self.kernel, "sc_message_will_be_sent", message, arg="message",
                is_veto=lambda r: isinstance(r, Veto), rewrite=_rewrite,
            )
        except hooks.GuardRefused as refused:
            raise self._refusal(refused) from None
        return message["content"], message["metadata"]

    def _refusal(self, refused: hooks.GuardRefused) -> Problem:
        if isinstance(refused.error, Problem):
            self.metrics.rejected.labels("problem").inc()
            return refused.error
        if isinstance(refused.veto, Veto):
            self.metrics.rejected.labels("veto").inc()
            veto = refused.veto
            return Problem(veto.reason, code=veto.code, status=veto.status,
                           title="Message Rejected", plugin=refused.plugin)
        self.metrics.rejected.labels("guard_error").inc()
        return MessageRejected(
            f"a message guard (plugin '{refused.plugin}') failed, so the message "
            "was not sent; retry later"
        )

    def _after_send(self, message: dict[str, Any]) -> None:
        """``sc_message_sent`` off the send path; bounded: when too many are pending
        the observers are skipped for this message and that is logged."""
        if not self.kernel.hook_order("sc_message_sent"):
            return
        if len(self._notifications) >= self.settings.max_pending_notifications:
            log.warning(
                "sc_message_sent backlog full (%d); skipping message %s",
                len(self._notifications),
                message["id"],
            )
            return
        self._spawn(self._notify_sent(message))

    async def _notify_sent(self, message: dict[str, Any]) -> None:
        start = time.perf_counter()
        await self.kernel.notify("sc_message_sent", message=message)
        self.metrics.delivery_duration.labels("notify").observe(time.perf_counter() - start)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _publish(self, topic: str, event_type: str, data: dict[str, Any],
                       posted: Callable[[], None] | None = None) -> None:
        """Publish through the gateway; a failure is counted and logged, never raised.
        ``posted`` is called once this instance's sockets have the event (before the
        other instances are reached)."""
        try:
            # The gateway delivers locally at once and reports (False) when the bus
            # could not reach the other instances.
            try:
                outcome = await self.kernel.ws.post(topic, event_type, data)
            finally:
                if posted is not None:
                    posted()
            delivered = await outcome
            if delivered is False:
                raise ConnectionError("the gateway could not publish to the bus")
        except Exception:
            self.metrics.published.labels("error").inc()
            self.metrics.publish_errors.inc()
            log.warning(
                "publishing %s to %s failed; clients catch up from history",
                event_type,
                topic,
                exc_info=True,
            )
            return
        self._published_ok.inc()
        self.metrics.publish_success.inc()

    async def _publish_to_user(self, user_id: str, event_type: str, data: dict[str, Any]) -> None:
        publish_to_user = getattr(self.kernel.ws, "publish_to_user", None)
        if publish_to_user is None:
            return
        try:
            await publish_to_user(user_id, event_type, data)
        except Exception:
            self.metrics.publish_errors.inc()
            log.warning("publishing %s to user %s failed", event_type, user_id, exc_info=True)

    async def _add_to_topic(self, user_id: str, topic: str) -> None:
        try:
            await self.kernel.ws.add_user_to_topic(user_id, topic)
        except Exception:
            # the socket still subscribes on its next connect; history has everything
            log.warning("could not subscribe user %s to %s", user_id, topic, exc_info=True)

    async def _remove_from_topic(self, user_id: str, topic: str) -> None:
        try:
            await self.kernel.ws.remove_user_from_topic(user_id, topic)
        except Exception:
            # The removal is committed; the gateway re-authorizes on reconnect.
            log.error("could not unsubscribe user %s from %s", user_id, topic, exc_info=True)

    async def _own_message(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> StoredMessage:
        await self.require_participant(conversation_id, user_id)
        stored = await self.store.get(conversation_id, message_id)
        if stored is None:
            raise MessageNotFound("no such message in this conversation")
        if stored.sender_id != str(user_id):
            raise NotTheSender("only the sender edits or deletes a message")
        return stored

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
                **await self.presence_of(m["user_id"]),
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
