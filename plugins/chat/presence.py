"""Presence and typing: ephemeral state kept in the cache (Redis or memory), never in
the database.

Contract: a user is online while any of their sockets is open on any instance (a
counter in the cache with a TTL, so a dead instance's sockets expire); the first
socket publishes ``presence.update`` online, the last one offline with
``last_seen_at``. Typing ``start`` is published at most once per ``typing_throttle``
per user and conversation and stops by itself after ``typing_ttl``; only participants
may type.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from secureconnect.models import rfc3339, utcnow

from .conversations import ConversationRepository
from .metrics import ChatMetrics
from .publisher import OwnedTasks, Publisher
from .settings import ChatSettings

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel
    from secureconnect.store.cache import Cache

    from .conversation_service import ConversationService

log = logging.getLogger(__name__)


def user_id_of(value: Any) -> str:
    return str(getattr(value, "user_id", value))


def _presence_key(user_id: str) -> str:
    return f"chat:presence:{user_id}"


async def presence_of(cache: Cache, user_id: str) -> dict[str, Any]:
    """``{online, last_seen_at}`` of a user, from the cache."""
    raw = await cache.get(_presence_key(user_id))
    online = raw is not None and int(raw) > 0
    last_seen = None if online else await cache.get(f"chat:last_seen:{user_id}")
    return {"online": online, "last_seen_at": last_seen}


class PresenceService:
    def __init__(
        self,
        kernel: Kernel,
        settings: ChatSettings,
        repo: ConversationRepository,
        metrics: ChatMetrics,
        *,
        conversations: ConversationService,
        publisher: Publisher,
        tasks: OwnedTasks,
    ) -> None:
        self.kernel = kernel
        self.settings = settings
        self.repo = repo
        self.metrics = metrics
        self.conversations = conversations
        self.publisher = publisher
        self.tasks = tasks
        self._typing_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for handle in self._typing_timers.values():
            handle.cancel()
        self._typing_timers.clear()

    async def presence_of(self, user_id: str) -> dict[str, Any]:
        return await presence_of(self.kernel.cache, user_id)

    async def typing(self, user_id: str, conversation_id: str, state: str) -> dict[str, Any]:
        """Ephemeral, never stored. ``start`` is published at most once per
        ``typing_throttle`` seconds per user and conversation; a ``stop`` follows by
        itself ``typing_ttl`` seconds after the last ``start``."""
        user_id, conversation_id = str(user_id), str(conversation_id)
        await self.conversations.require_participant(conversation_id, user_id)
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
        await self.publisher.publish(
            self.conversations.topic(conversation_id),
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
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        self._typing_timers[key] = loop.call_later(
            self.settings.typing_ttl, self._typing_expired, key
        )

    def _typing_expired(self, key: tuple[str, str]) -> None:
        self._typing_timers.pop(key, None)
        conversation_id, user_id = key
        self.tasks.spawn(self._expire_typing(conversation_id, user_id))

    async def _expire_typing(self, conversation_id: str, user_id: str) -> None:
        await self.kernel.cache.delete(f"chat:typing:{conversation_id}:{user_id}")
        await self.publisher.publish(
            self.conversations.topic(conversation_id),
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
        user_id = user_id_of(conn)
        # counted first: ``disconnected`` runs (and counts down) for every socket, also
        # one whose subscriptions below failed (a database 503)
        self.metrics.online_users.inc()
        conversation_ids = await self.repo.conversation_ids_of(user_id)
        for cid in conversation_ids:
            await conn.subscribe(self.conversations.topic(cid))
        count = await self.kernel.cache.incr(
            _presence_key(user_id), 1, ttl=self.settings.presence_ttl
        )
        if count == 1:
            await self._publish_presence(user_id, "online", None, conversation_ids)

    async def disconnected(self, conn: Any) -> None:
        """Last socket gone → offline. Runs as an owned task: the connection's own task
        may be cancelled while it closes, and presence must still be settled."""
        user_id = user_id_of(conn)
        self.metrics.online_users.dec()
        for handle_key in [k for k in self._typing_timers if k[1] == user_id]:
            self._typing_timers.pop(handle_key).cancel()
        self.tasks.spawn(self._went_away(user_id))

    async def _went_away(self, user_id: str) -> None:
        count = await self.kernel.cache.incr(
            _presence_key(user_id), -1, ttl=self.settings.presence_ttl
        )
        if count > 0:
            return
        await self.kernel.cache.delete(_presence_key(user_id))
        last_seen = str(rfc3339(utcnow()))
        await self.kernel.cache.set(
            f"chat:last_seen:{user_id}", last_seen, ttl=self.settings.last_seen_ttl
        )
        conversation_ids = await self.repo.conversation_ids_of(user_id)
        await self._publish_presence(user_id, "offline", last_seen, conversation_ids)

    async def _publish_presence(
        self, user_id: str, status: str, last_seen: str | None, conversation_ids: list[str]
    ) -> None:
        event = {"user_id": user_id, "status": status, "last_seen_at": last_seen}
        for cid in conversation_ids:
            await self.publisher.publish(
                self.conversations.topic(cid), "presence.update", {**event, "conversation_id": cid}
            )
