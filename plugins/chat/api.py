"""Chat's published interface: the one surface other plugins may use.

Contract
--------
* Other plugins (polls, video, drive, push, ai, third-party) import **only this module**
  of chat (``from secureconnect_plugins.chat.api import CONVERSATIONS, Conversations``);
  import-linter enforces it in ``make lint``.
* They get the implementation while the app runs with ``kernel.require(CONVERSATIONS)``
  (typed: the result is a :class:`Conversations`). It is provided from chat's cleanup
  context, so a plugin that uses it declares ``REQUIRES = ("chat",)`` in its package
  ``__init__`` — its own contexts then open after chat's and close before them.
* Membership is checked by the caller's service layer through this interface: every
  conversation resource a plugin exposes (a poll, a call, a shared file) must be
  refused to non-participants. :class:`NotAParticipant` (403 ``not_a_participant``) is
  the one answer for "not a member" and "no such conversation", so ids cannot be probed.
* Participant changes are announced through chat's hooks (``sc_participant_added``,
  ``sc_participant_removed``, ``sc_conversation_deleted``; see :mod:`.hookspecs`), which
  run on **every instance**; ``local`` tells the instance where the change happened.

Nothing here exposes chat's service, store or tables; the methods are small and stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

from secureconnect.errors import Forbidden
from secureconnect.kernel import ServiceKey

Role = Literal["owner", "admin", "member"]
ConversationType = Literal["direct", "group"]
ROLES: tuple[Role, ...] = ("owner", "admin", "member")
#: roles that may moderate a conversation (close others' polls, end calls, ...)
MODERATOR_ROLES: frozenset[str] = frozenset({"owner", "admin"})
TOPIC_PREFIX = "conversation:"


class NotAParticipant(Forbidden):
    """403: the user is not a participant of the conversation (or it does not exist)."""

    code = "not_a_participant"


@dataclass(frozen=True)
class Participant:
    user_id: str
    role: Role


@dataclass(frozen=True)
class ConversationInfo:
    id: str
    type: ConversationType
    name: str | None


@dataclass(frozen=True)
class ChatMessage:
    """A message as other plugins read it. ``content`` is ``None`` for a deleted
    message; an encrypted message's ``content`` is ciphertext the server cannot read —
    plugins that process text must skip ``is_encrypted`` messages."""

    id: str
    conversation_id: str
    seq: int
    sender_id: str
    message_type: str
    content: str | None
    is_encrypted: bool
    metadata: dict[str, Any] | None
    file_id: str | None
    created_at: str


class MessageText(NamedTuple):
    """A message as a reader of its text needs it (:meth:`Conversations.texts`): no
    metadata, no timestamps — read straight from the store's rows. ``content`` is
    ``None`` for a deleted message and ciphertext when ``is_encrypted``."""

    seq: int
    sender_id: str
    message_type: str
    content: str | None
    is_encrypted: bool


class Conversations(Protocol):
    """What other plugins may ask of chat."""

    def topic(self, conversation_id: str) -> str:
        """The gateway topic of the conversation (``conversation:<id>``): publish a
        plugin event to every participant's sockets with ``kernel.ws.publish``."""
        ...

    async def is_participant(self, conversation_id: str, user_id: str) -> bool:
        """Membership, no side effects (``False`` for unknown conversations)."""
        ...

    async def require_participant(self, conversation_id: str, user_id: str) -> Role:
        """The user's role, or raise :class:`NotAParticipant` (403)."""
        ...

    async def can_moderate(self, user_id: str, conversation_id: str) -> bool:
        """Is the user an owner or admin of the conversation?"""
        ...

    async def participants(self, conversation_id: str) -> list[Participant]:
        """Every participant with their role (empty for unknown conversations)."""
        ...

    async def conversation(self, conversation_id: str) -> ConversationInfo | None:
        """Type and name of the conversation, or ``None`` when it does not exist."""
        ...

    async def conversations_of(self, user_id: str) -> list[str]:
        """Ids of every conversation the user belongs to."""
        ...

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
        """Put a plugin message (``system``, ``poll``, ``file``, ...) in the timeline on
        behalf of ``sender_id``: same membership check, size limits, guards, persistence
        and delivery as a client's send. Returns the message (with ``id`` and ``seq``);
        raises the same problems (403, a guard's veto, 413)."""
        ...

    async def messages(
        self, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[ChatMessage]:
        """The newest ``limit`` messages with ``seq > after_seq``, oldest first.
        The caller checks the reader's membership first."""
        ...

    async def texts(
        self, conversation_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[MessageText]:
        """:meth:`messages` as :class:`MessageText`: the same window, a fraction of
        the server's work per message (for plugins that read long windows of text)."""
        ...

    async def unread_count(self, conversation_id: str, user_id: str) -> int:
        """Messages in the conversation the user has not marked read."""
        ...

    async def is_online(self, user_id: str) -> bool:
        """Has the user a live socket on any instance (presence)?"""
        ...


#: the key other plugins pass to ``kernel.require``
CONVERSATIONS: ServiceKey[Conversations] = ServiceKey("chat.conversations")

__all__ = [
    "CONVERSATIONS",
    "MODERATOR_ROLES",
    "ROLES",
    "TOPIC_PREFIX",
    "ChatMessage",
    "ConversationInfo",
    "ConversationType",
    "Conversations",
    "MessageText",
    "NotAParticipant",
    "Participant",
    "Role",
]
