"""Who has joined a call, as the relay path asks it thousands of times a second.

Each instance keeps the joined set of recently signalled calls in memory for at most
``ttl`` seconds. Every committed change of a call's membership forgets the entry on
the changing instance at once and on the others through the bus topic
``video:calls`` — published *before* the change's events, so a client that saw
``call.left`` can no longer get a relay through any instance. The TTL only bounds the
damage of an invalidation lost in a bus outage. Concurrent misses for one call share
one query; a change during a look-up is never cached (the entry is dropped, the
look-up's answer is used once).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel
    from secureconnect.store.bus import Subscription

log = logging.getLogger(__name__)

TOPIC = "video:calls"
#: joined user ids of a live call; empty once ended; ``None`` for an unknown call
Joined = frozenset[str] | None
Loader = Callable[[str], Awaitable[Joined]]


class JoinedCache:
    def __init__(self, kernel: Kernel, loader: Loader, ttl: float, max_calls: int = 10_000
                 ) -> None:
        self.kernel = kernel
        self.loader = loader
        self.ttl = ttl
        self.max_calls = max_calls
        self._entries: dict[str, tuple[float, asyncio.Future[Joined]]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.kernel.bus.subscribe(TOPIC, self._on_message)

    async def close(self) -> None:
        if self._sub is not None:
            await self._sub.close()

    async def get(self, call_id: str) -> Joined:
        if self.ttl <= 0:
            return await self.loader(call_id)
        now = time.monotonic()
        entry = self._entries.get(call_id)
        if entry is not None and entry[0] > now:
            if entry[1].done():
                return entry[1].result()
            return await asyncio.shield(entry[1])
        if len(self._entries) >= self.max_calls:
            self._entries.clear()
        future: asyncio.Future[Joined] = asyncio.get_running_loop().create_future()
        self._entries[call_id] = (now + self.ttl, future)
        try:
            future.set_result(await self.loader(call_id))
        except BaseException as exc:
            if self._entries.get(call_id, (0, None))[1] is future:
                del self._entries[call_id]
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        return future.result()

    def forget(self, call_ids: Iterable[str]) -> None:
        for call_id in call_ids:
            self._entries.pop(call_id, None)

    async def changed(self, call_ids: set[str]) -> None:
        """Membership of these calls changed (committed): forget here and everywhere."""
        if not call_ids:
            return
        self.forget(call_ids)
        try:
            # posted: ordered before the events that follow, without waiting for Redis
            await self.kernel.bus.post(TOPIC, json.dumps(sorted(call_ids)).encode())
        except Exception:
            log.warning("video: could not announce a membership change; other instances "
                        "forget it within %s s", self.ttl, exc_info=True)

    def _on_message(self, _topic: str, message: bytes) -> None:
        try:
            ids = json.loads(message)
            self.forget(str(i) for i in ids)
        except (ValueError, TypeError):
            log.warning("video: ignored a malformed %s message", TOPIC)
