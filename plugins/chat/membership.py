"""A short-lived cache of "this user is a participant" for the send path.

Checking membership costs a SQL round trip per message, the largest single cost of a
send under load. Only *positive* answers are cached, for at most ``ttl`` seconds, and
every removal forgets them at once:

* on this instance directly, and on the others through the bus topic
  ``chat:membership`` (``forget`` is published before the removal is announced);
* a look-up that started before a removal never stores its (stale) answer: each
  ``forget`` moves an epoch, and ``remember`` is refused when the epoch moved since the
  look-up began;
* if the bus cannot reach another instance (Redis down), that instance keeps a stale
  positive for at most ``ttl`` seconds — the bound documented in docs/chat.md.

Non-participants are never cached: they always reach the database, so someone added
on another instance can send at once, and refusals are never stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel
    from secureconnect.store.bus import Subscription

log = logging.getLogger(__name__)

#: bus topic carrying removals to every instance
BUS_TOPIC = "chat:membership"


class MembershipCache:
    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> expiry
        #: look-ups in flight: pair → (epoch it began at, its answer to come)
        self._running: dict[tuple[str, str], tuple[int, asyncio.Future[bool | None]]] = {}
        self.epoch = 0
        self._subscription: Subscription | None = None
        self._kernel: Kernel | None = None

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def __len__(self) -> int:
        return len(self._entries)

    def holds(self, conversation_id: str, user_id: str) -> bool:
        key = (conversation_id, user_id)
        expiry = self._entries.get(key)
        if expiry is None:
            return False
        if expiry <= time.monotonic():
            del self._entries[key]
            return False
        return True

    async def check(
        self, conversation_id: str, user_id: str, fetch: Callable[[], Awaitable[bool]]
    ) -> bool:
        """Is the user a participant: a cached "yes", else ``fetch()`` (whose "yes" is
        remembered). Concurrent checks of one pair share one ``fetch`` when it began
        after the last removal — a burst of sends, or a cache entry expiring under
        load, costs one look-up, not one per send. If the shared look-up fails, each
        waiter looks up for itself."""
        if self.holds(conversation_id, user_id):
            return True
        key = (conversation_id, user_id)
        epoch = self.epoch
        running = self._running.get(key)
        if running is not None and running[0] == epoch:
            answer = await asyncio.shield(running[1])
            if answer is not None:
                return answer
            return await fetch()
        shared: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._running[key] = (epoch, shared)
        answer = None
        try:
            answer = await fetch()
        finally:
            shared.set_result(answer)  # None (failed): the waiters look up themselves
            if self._running.get(key, (0, None))[1] is shared:
                del self._running[key]
        if answer:
            self.remember(conversation_id, user_id, epoch)
        return answer

    def remember(self, conversation_id: str, user_id: str, epoch: int) -> None:
        """Store a positive answer obtained by a look-up that began at ``epoch``."""
        if not self.enabled or epoch != self.epoch:
            return
        self._entries[(conversation_id, user_id)] = time.monotonic() + self.ttl
        self._entries.move_to_end((conversation_id, user_id))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_local(self, conversation_id: str, user_id: str) -> None:
        self.epoch += 1
        self._entries.pop((conversation_id, user_id), None)

    # -- across instances ---------------------------------------------------------------
    async def start(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._subscription = await kernel.bus.subscribe(BUS_TOPIC, self._on_bus)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        self._entries.clear()

    async def forget(self, conversation_id: str, user_id: str) -> bool:
        """Forget here and on every instance; False when other instances could not be
        told (their entries then expire within ``ttl``)."""
        self.forget_local(conversation_id, user_id)
        if self._kernel is None:
            return True
        message = json.dumps({"c": conversation_id, "u": user_id}).encode()
        return await self._kernel.bus.publish(BUS_TOPIC, message)  # never raises

    def _on_bus(self, _topic: str, message: bytes) -> None:
        try:
            data = json.loads(message)
            self.forget_local(str(data["c"]), str(data["u"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed membership message on %s", BUS_TOPIC)
