"""Chat's way out to sockets: events to a conversation's topic or a user, and topic
membership changes, through the gateway (``kernel.ws``).

Contract: nothing here raises. A failure to reach the bus or the gateway is counted
(``chat_*publish*`` metrics) and logged, and clients catch up from history by ``seq``
(persist before publish). :class:`OwnedTasks` keeps chat's background work (observers,
presence settling, typing expiry) owned and bounded, and cancels it on close.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from .metrics import ChatMetrics

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, kernel: Kernel, metrics: ChatMetrics) -> None:
        self.kernel = kernel
        self.metrics = metrics
        self._published_ok = metrics.published.labels("success")

    async def publish(self, topic: str, event_type: str, data: dict[str, Any],
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

    async def publish_to_user(self, user_id: str, event_type: str, data: dict[str, Any]) -> None:
        publish_to_user = getattr(self.kernel.ws, "publish_to_user", None)
        if publish_to_user is None:
            return
        try:
            await publish_to_user(user_id, event_type, data)
        except Exception:
            self.metrics.publish_errors.inc()
            log.warning("publishing %s to user %s failed", event_type, user_id, exc_info=True)

    async def add_to_topic(self, user_id: str, topic: str) -> None:
        try:
            await self.kernel.ws.add_user_to_topic(user_id, topic)
        except Exception:
            # the socket still subscribes on its next connect; history has everything
            log.warning("could not subscribe user %s to %s", user_id, topic, exc_info=True)

    async def remove_from_topic(self, user_id: str, topic: str) -> None:
        try:
            await self.kernel.ws.remove_user_from_topic(user_id, topic)
        except Exception:
            # The removal is committed; the gateway re-authorizes on reconnect.
            log.error("could not unsubscribe user %s from %s", user_id, topic, exc_info=True)


class OwnedTasks:
    """Background tasks that belong to chat: counted, awaited briefly on close and then
    cancelled — never left running."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, grace: float = 2.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)


__all__ = ["Callable", "OwnedTasks", "Publisher"]
