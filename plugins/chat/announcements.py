"""Participant and conversation changes, announced to observers on every instance.

Chat's hooks ``sc_participant_added``, ``sc_participant_removed`` and
``sc_conversation_deleted`` (see :mod:`.hookspecs`) must reach every instance: a call
ends for a removed user wherever that user's socket is. So a change is not notified
directly; it is posted on the bus topic ``chat:participants`` with this instance's id,
and every instance — this one included, the bus delivers locally too — runs the
observers with ``local`` true only where the change was made.

Guarantees: observers run in owned tasks (never on the caller's path, cancelled on
close); one failing observer is logged and counted and does not stop the others. When
the bus cannot reach the other instances (Redis down) they miss the announcement; the
local observers still run. Pending announcements are bounded (``max_pending``): past
it, one is dropped and logged rather than growing memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from secureconnect.ids import new_id_str

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel
    from secureconnect.store.bus import Subscription

log = logging.getLogger(__name__)

BUS_TOPIC = "chat:participants"
HOOKS = {
    "added": "sc_participant_added",
    "removed": "sc_participant_removed",
    "deleted": "sc_conversation_deleted",
}


class Announcements:
    def __init__(self, kernel: Kernel, *, max_pending: int = 10_000) -> None:
        self.kernel = kernel
        self.instance = new_id_str()
        self.max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.kernel.bus.subscribe(BUS_TOPIC, self._on_bus)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def added(self, conversation_id: str, user_id: str, role: str, by: str) -> None:
        await self._post("added", conversation_id=conversation_id, user_id=user_id,
                         role=role, by=by)

    async def removed(self, conversation_id: str, user_id: str, by: str) -> None:
        await self._post("removed", conversation_id=conversation_id, user_id=user_id, by=by)

    async def deleted(self, conversation_id: str) -> None:
        await self._post("deleted", conversation_id=conversation_id)

    async def _post(self, op: str, **fields: str) -> None:
        message = json.dumps({"op": op, "origin": self.instance, **fields}).encode()
        await self.kernel.bus.post(BUS_TOPIC, message)  # never raises; local first

    def _on_bus(self, _topic: str, raw: bytes) -> None:
        try:
            data: dict[str, Any] = json.loads(raw)
            hook = HOOKS[data.pop("op")]
            local = data.pop("origin") == self.instance
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignored a malformed announcement on %s", BUS_TOPIC)
            return
        if len(self._tasks) >= self.max_pending:
            log.warning("chat announcements backlog full (%d); %s for conversation %s "
                        "not run here", len(self._tasks), hook, data.get("conversation_id"))
            return
        task = asyncio.get_running_loop().create_task(
            self.kernel.notify(hook, **{k: str(v) for k, v in data.items()}, local=local)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
