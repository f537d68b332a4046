"""Topics and routing: bus subscriptions, fan-out, membership changes, authorization.

Owns
    One bus subscription per topic per instance, reference counted over this
    instance's connections subscribed to it; the fan-out of a bus message to them;
    ``publish``/``post`` onto the bus; adding/removing every connection of a user to a
    topic on every instance (the control topic ``ws:control``); who may ``subscribe``
    (``sc_authorize_topic``, deny by default; ``user:<id>`` only for its own user) and
    the client's ``subscribe``/``unsubscribe`` frames.

Guarantees
    * An event is encoded once per publish and framed once per fan-out, whatever the
      number of sockets; every socket subscribed when it arrives gets it (or counts it
      as dropped, see ``connection``).
    * A topic's bus subscription exists while ≥1 local connection is subscribed, and
      is closed when the last one leaves (also when it left while subscribing).
    * ``publish``/``post`` never raise: a bus failure is logged and counted
      (``websocket_publish_errors_total``); local sockets get the event anyway.
    * A membership change applies to this instance before the call returns, to the
      others when their bus delivers the control message.

Called by
    ``Connection.subscribe``/``unsubscribe`` (attach/detach), the ``Gateway`` facade
    (``publish``, ``post``, ``publish_to_user``, ``add_user_to_topic``,
    ``remove_user_from_topic``, ``authorize_topic``), ``dispatch`` (the two built-in
    frame types), ``serving`` (SSE ``?topic=``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import hooks
from ..errors import Forbidden, Problem
from ..store.bus import resolved
from .frames import encode, text_frame

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..store.bus import Subscription
    from .connection import Connection
    from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

#: bus topic carrying ``{"op": "add"|"remove", "user_id": ..., "topic": ...}``
CONTROL_TOPIC = "ws:control"
USER_TOPIC_PREFIX = "user:"


@dataclass
class _Topic:
    conns: set[Connection] = field(default_factory=set)
    sub: Subscription | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class TopicRouter:
    def __init__(
        self,
        kernel: Kernel,
        metrics: GatewayMetrics,
        spawn: Callable[[Awaitable[Any]], asyncio.Future[Any]],
        connections_of: Callable[[str], Collection[Connection]],
        instance_id: str,
    ) -> None:
        self.kernel = kernel
        self.metrics = metrics
        self._spawn = spawn
        #: this instance's open connections of a user
        self._connections_of = connections_of
        #: tells this instance's control messages from other instances'
        self.instance_id = instance_id
        self._topics: dict[str, _Topic] = {}

    async def start(self) -> Subscription:
        """Listen to membership changes made on other instances."""
        return await self.kernel.bus.subscribe(CONTROL_TOPIC, self._on_control)

    # -- publishing -------------------------------------------------------------------
    async def post(self, topic: str, event_type: str, data: Any) -> asyncio.Future[bool]:
        try:
            outcome = await self.kernel.bus.post(topic, encode(event_type, data).encode())
        except Exception:
            log.warning("publishing %s to %s failed", event_type, topic, exc_info=True)
            self.metrics.publish_errors.inc()
            return resolved(False)
        if outcome.done():
            if outcome.result() is False:
                self.metrics.publish_errors.inc()
        else:
            outcome.add_done_callback(self._count_outcome)
        return outcome

    def _count_outcome(self, outcome: asyncio.Future[bool]) -> None:
        # (cancelled: the caller stopped waiting; the bus sends the event anyway)
        if not outcome.cancelled() and outcome.result() is False:
            self.metrics.publish_errors.inc()

    # -- topics (one bus subscription per topic per instance) ------------------------
    def count(self) -> int:
        return len(self._topics)

    async def attach(self, topic: str, conn: Connection) -> None:
        entry = self._topics.get(topic)
        if entry is not None:
            entry.conns.add(conn)
            await entry.ready.wait()
            if entry.sub is None:  # the first subscriber's bus subscription failed
                entry.conns.discard(conn)
                raise RuntimeError(f"could not subscribe to {topic}")
            return
        entry = self._topics[topic] = _Topic()
        entry.conns.add(conn)
        count_out = self.metrics.outbound

        def deliver(_topic: str, message: bytes) -> None:
            text = message.decode()
            wire = text_frame(message)  # one frame for every socket
            written = 0
            for target in list(entry.conns):
                if target.enqueue(text, wire):
                    written += 1
            if written:
                count_out(text, written)

        try:
            entry.sub = await self.kernel.bus.subscribe(topic, deliver)
        except BaseException:
            entry.conns.clear()
            self._forget(topic, entry)
            raise
        finally:
            entry.ready.set()
        if entry.closed:  # every connection left while the subscription was made
            await entry.sub.close()

    async def detach(self, topic: str, conn: Connection) -> None:
        entry = self._topics.get(topic)
        if entry is None:
            return
        entry.conns.discard(conn)
        if not entry.conns:
            self._forget(topic, entry)
            if entry.sub is not None:
                with contextlib.suppress(Exception):
                    await entry.sub.close()

    def _forget(self, topic: str, entry: _Topic) -> None:
        entry.closed = True
        if self._topics.get(topic) is entry:
            del self._topics[topic]

    # -- membership changes on every instance -------------------------------------------
    async def control_all(self, op: str, user_id: str, topic: str) -> None:
        """``op`` (``add``/``remove``) every connection of ``user_id`` to ``topic``."""
        # This instance at once (a publish right after sees the change), then the others.
        await self._apply_control(op, user_id, topic)
        message = {"op": op, "user_id": user_id, "topic": topic, "origin": self.instance_id}
        await self.kernel.bus.publish(CONTROL_TOPIC, json.dumps(message).encode())

    def _on_control(self, _topic: str, message: bytes) -> None:
        try:
            body = json.loads(message)
            op, user_id, topic = body["op"], str(body["user_id"]), str(body["topic"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed %s message", CONTROL_TOPIC)
            return
        if body.get("origin") == self.instance_id or not self._connections_of(user_id):
            return
        # Never wait for bus subscriptions inside the bus's own listener: an owned task.
        self._spawn(self._apply_control(op, user_id, topic))

    async def _apply_control(self, op: str, user_id: str, topic: str) -> None:
        for conn in list(self._connections_of(user_id)):
            try:
                if op == "add":
                    await conn.subscribe(topic)
                elif op == "remove":
                    await conn.unsubscribe(topic)
            except Exception:
                log.warning("could not %s %s for user %s", op, topic, user_id, exc_info=True)

    # -- authorization ----------------------------------------------------------------
    async def authorize(self, principal: Any, topic: str) -> bool:
        """Deny by default: allowed when ≥1 plugin says True and none False
        (an exception counts as False). ``user:<id>`` only for its own user."""
        if topic.startswith(USER_TOPIC_PREFIX):
            return topic == USER_TOPIC_PREFIX + str(principal.user_id)
        return await hooks.vote(self.kernel, "sc_authorize_topic", user=principal, topic=topic)

    # -- the client's frames ------------------------------------------------------------
    async def client_subscribe(self, conn: Connection, data: dict[str, Any]) -> Any:
        topic = _topic_of(data)
        if not await self.authorize(conn.principal, topic):
            raise Forbidden("you may not subscribe to this topic", code="topic_forbidden")
        await conn.subscribe(topic)
        return {"topic": topic}

    async def client_unsubscribe(self, conn: Connection, data: dict[str, Any]) -> Any:
        topic = _topic_of(data)
        await conn.unsubscribe(topic)
        return {"topic": topic}


def _topic_of(data: dict[str, Any]) -> str:
    topic = data.get("topic")
    if not isinstance(topic, str) or not topic or len(topic) > 200:
        raise Problem(
            "data.topic must be a non-empty string",
            code="bad_envelope",
            status=400,
            title="Bad Request",
        )
    return topic
