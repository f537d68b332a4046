"""Pub/sub bus: ``publish(topic, message)`` reaches every subscriber on every instance.

``InProcessBus`` serves one instance; ``RedisBus`` (cross-instance) is chosen when
``redis.url`` is set. Subscriptions are reference counted per topic and instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
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

    async def publish(self, topic: str, message: bytes) -> bool:
        """Deliver to every subscriber; ``False`` when other instances could not be
        reached (counted, never raised)."""
        await self._deliver(topic, message)
        return True

    async def _deliver(self, topic: str, message: bytes) -> None:
        for sub in list(self._subs.get(topic, ())):
            try:
                result = sub.listener(topic, message)
                if result is not None:
                    await result
            except Exception:
                log.exception("bus listener failed on %s", topic)


class RedisBus(InProcessBus):
    """Cross-instance bus on Redis pub/sub.

    * Local subscribers get a local publish at once, straight from memory; the copy
      Redis echoes back to this instance is recognised by its instance-id prefix and
      skipped, so every subscriber sees each message exactly once.
    * One Redis SUBSCRIBE per topic per instance, however many local subscribers.
    * One owned reader task; when Redis goes away it reconnects with backoff and
      re-subscribes every topic that still has local subscribers.
    * A failed publish is counted (``bus_publish_errors_total``) and never raised:
      local delivery has already happened, and clients resync from history.
    """

    def __init__(self, url: str, metrics: Metrics, *, socket_timeout: float = 1.0) -> None:
        super().__init__(metrics)
        import redis.asyncio as aioredis

        self.instance = uuid.uuid4().hex.encode()
        self._redis: Any = aioredis.from_url(url, socket_timeout=socket_timeout,
                                        socket_connect_timeout=socket_timeout)
        # the reader's connection blocks on reads: no socket timeout there
        self._reader_redis: Any = aioredis.from_url(url, socket_connect_timeout=socket_timeout)
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.reconnects = metrics.counter(
            "bus_reconnects_total", "Times the Redis bus reader reconnected")

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="redis-bus-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
        await super().close()
        await self._redis.aclose()
        await self._reader_redis.aclose()

    async def subscribe(self, topic: str, listener: Listener) -> Subscription:
        new_topic = topic not in self._subs
        sub = await super().subscribe(topic, listener)
        if new_topic and self._pubsub is not None:
            try:
                await self._pubsub.subscribe(topic)
            except Exception:  # the reader re-subscribes everything when it reconnects
                log.warning("Redis subscribe to %s failed; retried on reconnect", topic)
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        await super()._unsubscribe(sub)
        if sub.topic not in self._subs and self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(sub.topic)

    async def publish(self, topic: str, message: bytes) -> bool:
        await self._deliver(topic, message)
        try:
            await self._redis.publish(topic, self.instance + b"|" + message)
        except Exception as exc:
            self.publish_errors.inc()
            log.warning("Redis publish on %s failed: %s", topic, type(exc).__name__)
            return False
        return True

    async def _read_forever(self) -> None:
        delay = 0.1
        first = True
        while True:
            try:
                pubsub = self._reader_redis.pubsub()
                # a control channel keeps the connection subscribed with no topics
                await pubsub.subscribe(f"sc:bus:{self.instance.decode()}", *self._subs)
                self._pubsub = pubsub
                if self._subs:  # topics added while the subscribe above was in flight
                    await pubsub.subscribe(*self._subs)
                if not first:
                    self.reconnects.inc()
                    log.warning("Redis bus reconnected; %d topics re-subscribed",
                                len(self._subs))
                first, delay = False, 0.1
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    origin, _, payload = bytes(msg["data"]).partition(b"|")
                    if origin == self.instance:
                        continue
                    channel = msg["channel"]
                    topic = channel.decode() if isinstance(channel, bytes) else channel
                    await self._deliver(topic, payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._pubsub = None
                log.warning("Redis bus reader lost its connection (%s); retrying",
                            type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


Bus = InProcessBus


def create_bus(settings: Any, metrics: Metrics) -> Bus:
    url = str(settings.redis.url or "")
    if url:
        return RedisBus(url, metrics, socket_timeout=float(settings.redis.socket_timeout))
    return InProcessBus(metrics)
