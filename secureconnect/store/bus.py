"""Pub/sub bus: ``publish(topic, message)`` reaches every subscriber on every instance.

``InProcessBus`` serves one instance; ``RedisBus`` (cross-instance) is chosen when
``redis.url`` is set. Subscriptions are reference counted per topic and instance.

``await bus.post(topic, message)`` is the two-step form: it returns once this
instance's subscribers have the message, with a future that tells (never raises)
whether the other instances were reached. Messages posted one after another leave in
that order, so a caller that keeps an order (a conversation's send line) only has to
hold it while posting, not while the message travels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from ..metrics import Metrics

log = logging.getLogger(__name__)

Listener = Callable[[str, bytes], Awaitable[None] | None]
#: called with the topics re-subscribed after the bus lost its connection: messages
#: other instances published on them meanwhile were missed
GapListener = Callable[[list[str]], Awaitable[None] | None]


class Subscription:
    def __init__(self, bus: InProcessBus, topic: str, listener: Listener) -> None:
        self.bus, self.topic, self.listener = bus, topic, listener
        self.active = True

    async def close(self) -> None:
        if self.active:
            self.active = False
            await self.bus._unsubscribe(self)


class InProcessBus:
    #: whether other instances are behind this bus (what one publishes, all hear)
    spans_instances = False

    def __init__(self, metrics: Metrics) -> None:
        #: moves each time this instance may have started missing other instances'
        #: messages (the Redis reader lost its connection): what was derived from
        #: their silence before (a read cache's entries) is no longer safe
        self.epoch = 0
        self._subs: dict[str, list[Subscription]] = {}
        self._gap_listeners: list[GapListener] = []
        self.publish_errors = metrics.counter(
            "bus_publish_errors_total", "Bus publishes that failed (never fail the caller)")

    def on_gap(self, listener: GapListener) -> None:
        """Call ``listener(topics)`` whenever this instance may have missed messages
        from other instances (its Redis connection was lost and is back). Never
        called for the in-process bus, which cannot miss anything."""
        self._gap_listeners.append(listener)

    async def _notify_gap(self, topics: list[str]) -> None:
        for listener in list(self._gap_listeners):
            try:
                result = listener(topics)
                if result is not None:
                    await result
            except Exception:
                log.exception("bus gap listener failed")

    @property
    def up(self) -> bool:
        """Messages from other instances are being received now (always, in process)."""
        return True

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
        return await (await self.post(topic, message))

    async def post(self, topic: str, message: bytes) -> asyncio.Future[bool]:
        """Deliver to this instance's subscribers; the future resolves to whether the
        other instances were reached (never to an exception)."""
        await self._deliver(topic, message)
        return resolved(True)

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
    * Outgoing messages wait in one bounded queue (``max_pending``; a message beyond
      it fails at once) and one owned task sends what waits as a pipeline: one round
      trip for a burst instead of one per message, and Redis gets them in post order.
    """

    #: messages sent to Redis in one pipeline at most
    BATCH = 512
    spans_instances = True

    def __init__(self, url: str, metrics: Metrics, *, socket_timeout: float = 1.0,
                 max_pending: int = 10000) -> None:
        super().__init__(metrics)
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        from .cache import cancel_safe_connection_class

        self.instance = uuid.uuid4().hex.encode()
        # This class is the only place retries happen (one resend of a batch, the
        # reader's reconnect loop): redis-py ≥ 6 would otherwise retry each command 3
        # times with back-off, holding a publish or a reconnect far past socket_timeout.
        # (connections whose send never swallows a cancellation: see cache.py)
        connection_class = cancel_safe_connection_class(url)
        self._redis: Any = aioredis.from_url(url, socket_timeout=socket_timeout,
                                        socket_connect_timeout=socket_timeout,
                                        retry=Retry(NoBackoff(), 0),
                                        connection_class=connection_class)
        # the reader's connection blocks on reads: no socket timeout there
        self._reader_redis: Any = aioredis.from_url(url, socket_connect_timeout=socket_timeout,
                                               retry=Retry(NoBackoff(), 0),
                                               connection_class=connection_class)
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.max_pending = max_pending
        self.socket_timeout = socket_timeout
        self._outbox: deque[tuple[str, bytes, asyncio.Future[bool]]] = deque()
        self._outbox_ready = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._overflowing = False
        self._publish_down = False
        self._failed_in_outage = 0
        self.resends = metrics.counter(
            "bus_publish_resends_total",
            "Publish batches sent again after their connection turned out to be dead")
        self.reconnects = metrics.counter(
            "bus_reconnects_total", "Times the Redis bus reader reconnected")

    @property
    def up(self) -> bool:
        """The reader is subscribed (it is ``False`` before the first connection and
        from the moment a lost connection is noticed until it is back)."""
        return self._pubsub is not None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_forever(), name="redis-bus-reader")
        self._sender = asyncio.create_task(self._send_forever(), name="redis-bus-sender")

    async def close(self) -> None:
        sender, self._sender = self._sender, None  # posts from now on fail at once
        if sender is not None:
            # what was posted leaves first (bounded): cancelling a pipeline half-way is
            # not reliable (the client may swallow the cancellation)
            self._outbox_ready.set()
            done, _ = await asyncio.wait([sender], timeout=2 * self.socket_timeout + 1)
            if not done:
                sender.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
            self._reader = None
        self._pubsub = None
        self.epoch += 1
        while self._outbox:  # what never left is a failed publish
            self._fail(self._outbox.popleft()[2])
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

    async def post(self, topic: str, message: bytes) -> asyncio.Future[bool]:
        await self._deliver(topic, message)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._sender is None or len(self._outbox) >= self.max_pending:
            if self._sender is not None and not self._overflowing:
                self._overflowing = True  # logged once until the queue drains
                log.warning("Redis publish queue full (%d): messages are not published "
                            "to other instances", self.max_pending)
            self._fail(future)
            return future
        self._outbox.append((topic, self.instance + b"|" + message, future))
        self._outbox_ready.set()
        return future

    def _fail(self, future: asyncio.Future[bool]) -> None:
        self.publish_errors.inc()
        if not future.done():
            future.set_result(False)

    async def _send_forever(self) -> None:
        outbox = self._outbox
        while self._sender is not None:  # None: the bus is closing
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while outbox:
                batch = [outbox.popleft() for _ in range(min(self.BATCH, len(outbox)))]
                try:
                    await self._send_batch(batch)
                except BaseException as exc:
                    for *_, future in batch:  # nobody waits on them forever
                        self._fail(future)
                    if not isinstance(exc, Exception):
                        raise  # cancelled by close(): the rest fails there
                    self._publish_failed(len(batch), exc)
                    continue
                if self._publish_down:
                    self._publish_down = False
                    log.warning("Redis publish recovered (%d messages failed meanwhile)",
                                self._failed_in_outage)
                for *_, future in batch:
                    if not future.done():
                        future.set_result(True)
            self._overflowing = False

    async def _send_batch(self, batch: list[tuple[str, bytes, asyncio.Future[bool]]]) -> None:
        """One pipeline; sent again once when the connection it went out on turns out
        to be dead (a pooled connection Redis closed while restarting fails on first
        use, and the client drops it: the second attempt takes a fresh one). A
        timeout is not resent: the messages may have arrived."""
        from redis.exceptions import ConnectionError as RedisConnectionError

        for attempt in (1, 2):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for topic, payload, _ in batch:
                        pipe.publish(topic, payload)
                    await pipe.execute()
                return
            except (RedisConnectionError, ConnectionError) as exc:
                if attempt == 2 or isinstance(exc, TimeoutError):
                    raise
                self.resends.inc()

    def _publish_failed(self, count: int, exc: Exception) -> None:
        """One warning per outage, not one per batch (or message)."""
        if not self._publish_down:
            self._publish_down = True
            self._failed_in_outage = 0
            log.warning("Redis publish failed (%s: %s); messages are delivered on this "
                        "instance only until Redis answers again", type(exc).__name__, exc)
        self._failed_in_outage += count

    async def _read_forever(self) -> None:
        delay = 0.1
        first = True
        lost = False
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
                    await self._notify_gap(list(self._subs))
                first, delay, lost = False, 0.1, False
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
                self.epoch += 1
                if not lost:  # once per outage; the retries are quiet
                    log.warning("Redis bus reader lost its connection (%s); retrying",
                                type(exc).__name__)
                    lost = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)


Bus = InProcessBus


def resolved(value: bool) -> asyncio.Future[bool]:
    """A :meth:`InProcessBus.post` outcome that is already known."""
    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def create_bus(settings: Any, metrics: Metrics) -> Bus:
    url = str(settings.redis.url or "")
    if url:
        return RedisBus(url, metrics, socket_timeout=float(settings.redis.socket_timeout),
                        max_pending=int(settings.redis.publish_queue))
    return InProcessBus(metrics)
