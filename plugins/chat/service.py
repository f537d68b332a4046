"""Chat's composition root: builds the parts and wires them together.

* :class:`~.conversation_service.ConversationService` — conversations, participants,
  roles, membership answers;
* :class:`~.message_service.MessageService` — send (validate → guard → persist →
  deliver), edit, delete, history, read receipts;
* :class:`~.presence.PresenceService` — presence and typing;
* :class:`~.publisher.Publisher` — events to sockets through the gateway;
  :class:`~.sendline.OrderedLines` — the per-conversation send line (inside messages);
* :class:`~.announcements.Announcements` — participant changes to observers on every
  instance; :class:`~.membership.MembershipCache`, :class:`~.activity.ActivityRecorder`.

Routes and WebSocket handlers call the parts (``chat.conversations``,
``chat.messages``, ``chat.presence``); other plugins see none of this — they use
:mod:`.api`. The root owns start-up and shutdown order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .activity import ActivityRecorder
from .announcements import Announcements
from .conversation_service import ConversationService
from .conversations import ConversationRepository
from .membership import MembershipCache
from .message_service import Draft, MessageService
from .metrics import ChatMetrics
from .presence import PresenceService
from .publisher import OwnedTasks, Publisher
from .settings import ChatSettings
from .store import MessageStore

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

__all__ = ["ChatService", "ChatSettings", "Draft"]


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
        self.tasks = OwnedTasks()
        self.publisher = Publisher(kernel, self.metrics)
        self.activity = ActivityRecorder(repo, settings.activity_flush_interval)
        self.membership = MembershipCache(
            settings.membership_cache_ttl, settings.membership_cache_size
        )
        self.announce = Announcements(kernel)
        self.conversations = ConversationService(
            kernel, settings, repo, self.metrics, publisher=self.publisher,
            activity=self.activity, membership=self.membership, announce=self.announce,
        )
        self.messages = MessageService(
            kernel, settings, store, repo, self.metrics, conversations=self.conversations,
            publisher=self.publisher, activity=self.activity, tasks=self.tasks,
        )
        self.presence = PresenceService(
            kernel, settings, repo, self.metrics, conversations=self.conversations,
            publisher=self.publisher, tasks=self.tasks,
        )

    async def start(self) -> None:
        self.activity.start()
        self.kernel.ws.on_dropped(self.messages._count_dropped)
        await self.membership.start(self.kernel)
        await self.announce.start()

    async def close(self) -> None:
        """Stop typing timers and announcements; give pending background work (hook
        observers, presence) a moment, then cancel it — every task is owned."""
        self.presence.close()
        await self.announce.close()
        await self.membership.close()
        await self.activity.close()
        await self.tasks.close()

    # -- for the interface adapter (other plugins) ------------------------------------
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
        """A plugin-originated message (``poll``, ``system``, ``file``, ...) through the
        same send path as a client's (membership, limits, guards, persistence)."""
        message, _ = await self.messages.send_message(
            str(sender_id),
            str(conversation_id),
            Draft(content=content, message_type=message_type, metadata=metadata,
                  file_id=file_id),
            origin="plugin",
        )
        return message
