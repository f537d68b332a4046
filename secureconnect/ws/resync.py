"""After a bus outage, tell the sockets on this instance what they may have missed.

While Redis is down (or this instance's subscription connection is), events other
instances publish never reach this instance's sockets. When the bus has re-subscribed
it calls its gap listeners with the topics concerned (:meth:`InProcessBus.on_gap`);
every local connection subscribed to one of them gets a ``resync`` event::

    {"type": "resync", "data": {"reason": "bus_outage", "topics": [...],
                                "conversation_ids": [...]}}

so its client catches up from history (chat: ``GET .../messages`` from its last
``seq``). Sending is queueing: bounded by each connection's send queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..kernel import Kernel

CONVERSATION_PREFIX = "conversation:"


def install(kernel: Kernel) -> None:
    """Register the listener on the kernel's bus (idempotent per kernel)."""
    if kernel.state.get("ws.resync_installed"):
        return
    kernel.state["ws.resync_installed"] = True

    async def on_gap(topics: list[str]) -> None:
        await tell(kernel, topics)

    kernel.bus.on_gap(on_gap)


async def tell(kernel: Kernel, topics: list[str]) -> int:
    """Queue ``resync`` on each local connection subscribed to one of ``topics``;
    returns how many were told."""
    wanted = set(topics)
    told = 0
    for conn in list(getattr(kernel.ws, "connections", ())):
        hit = sorted(set(getattr(conn, "topics", ())) & wanted)
        if not hit or getattr(conn, "closing", False):
            continue
        data: dict[str, Any] = {
            "reason": "bus_outage",
            "topics": hit,
            "conversation_ids": [t[len(CONVERSATION_PREFIX):] for t in hit
                                 if t.startswith(CONVERSATION_PREFIX)],
        }
        await conn.send("resync", data)
        told += 1
    return told
