"""The WebSocket gateway: authenticated sockets, event dispatch, topics, bounded delivery.

Interfaces other parts use (keep them stable)
---------------------------------------------
``kernel.ws`` is the :class:`Gateway` of the application.

* ``await kernel.ws.publish(topic, event_type, data)`` — send ``{"type", "data"}`` to
  every socket subscribed to ``topic`` on every instance (through ``kernel.bus``).
  Never raises on a bus failure; the failure is logged and counted
  (``websocket_publish_errors_total``).
* ``outcome = await kernel.ws.post(topic, event_type, data)`` — the same in two steps:
  it returns once this instance's sockets have the event; ``await outcome`` (never
  raises) tells whether the other instances were reached. Events posted one after
  another reach every instance in that order, so a sender keeping an order holds it
  only while posting (chat: its conversation's send line).
* ``await kernel.ws.add_user_to_topic(user_id, topic)`` /
  ``await kernel.ws.remove_user_from_topic(user_id, topic)`` — subscribe / unsubscribe
  every open connection of a user, on every instance (bus topic ``ws:control``).
* :class:`Connection` (what ``sc_ws_connected``/``sc_ws_disconnected`` and WS handlers
  receive): ``.user_id`` (str), ``.session_id`` (str), ``.principal``,
  ``await conn.subscribe(topic)``, ``await conn.unsubscribe(topic)``,
  ``await conn.send(event_type, data)``.
* :data:`WsHandler` — ``async def handler(conn, data) -> ack data``; raise a
  :class:`~secureconnect.errors.Problem` to answer with an ``error`` frame. A socket's
  frames are handled one after another; a handler with slow work may return
  :class:`Deferred` (``Deferred(coro)``) after its quick part: the gateway reads the
  next frame at once and answers this one when ``coro`` finishes (at most
  ``ws.max_deferred`` per socket; more wait). Order work that must stay ordered in the
  quick part (chat takes its per-conversation place in line there).

How it works
------------
* One bus subscription per topic per instance, reference counted over the local
  connections subscribed to it; an event is encoded once and fanned out as text.
* A WebSocket with nothing queued and little unsent takes frames at once; what one
  loop round gathers for it leaves in one write (``WsConnection.write_directly``).
* Otherwise a connection has a bounded send queue drained by exactly one writer task. A
  connection whose queue overflows is a slow consumer: its queue is replaced by one
  ``resync`` event (or it is closed with 1013, ``ws.slow_consumer``) and the dropped
  events are counted; nothing else waits for it.
* Client ``subscribe`` is authorized by ``sc_authorize_topic`` (deny by default); the
  socket joins ``user:<own id>`` on connect.
* Sessions revoked on the bus topic ``auth:revoked`` and tokens reaching their expiry
  close their connections (1008).

Close codes: 1000 normal, 1001 server shutting down, 1008 token revoked or expired,
1009 frame too large, 1011 internal error, 1013 slow consumer (reconnect and catch up).

Where things live (each module states its contract at its top)
--------------------------------------------------------------
* ``frames.py`` — the wire layout: envelope (``type`` first), ack/error/resync frames,
  WebSocket framing, SSE lines, close codes. Nothing else builds or parses a frame.
* ``connection.py`` — :class:`Connection` and its transports: per-socket state, the
  bounded send queue, direct writes, the slow-consumer policy.
* ``topics.py`` — bus subscriptions per topic, fan-out, publish/post, adding/removing
  users to topics on every instance, topic authorization.
* ``dispatch.py`` — the handler table, envelopes, deadlines, :class:`Deferred` answers.
* ``admission.py`` — refusing requests, connection limits, the registry of open
  connections, revocation/expiry/shutdown closes.
* ``serving.py`` — one request's life: admit, register, upgrade, read, unregister.
* ``config.py`` / ``metrics.py`` — ``[ws]`` settings; the ``websocket_*`` series.
* this module — :class:`Gateway`, the facade composing them (``kernel.ws``), and the
  names other code imports (re-exported; import them from here or ``secureconnect.ws``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import serving
from .admission import Admission
from .config import GatewayConfig
from .connection import Connection, DropListeners, RoundWriter, SseConnection, WsConnection
from .dispatch import Deadlines, Deferred, Dispatcher, WsHandler
from .frames import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    encode,
    text_frame,
)
from .metrics import GatewayMetrics
from .topics import CONTROL_TOPIC, USER_TOPIC_PREFIX, TopicRouter

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..store.bus import Subscription

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_TRY_AGAIN_LATER",
    "CONTROL_TOPIC",
    "USER_TOPIC_PREFIX",
    "Connection",
    "Deadlines",
    "Deferred",
    "Gateway",
    "GatewayConfig",
    "SseConnection",
    "WsConnection",
    "WsHandler",
    "encode",
    "text_frame",
]


class Gateway:
    """``kernel.ws``: composes admission, connections, topics and dispatch; also the
    :class:`~secureconnect.ws.connection.Host` its connections reach it through."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.config = GatewayConfig.from_settings(kernel.settings.get("ws"))
        self.metrics = GatewayMetrics(kernel.metrics)
        #: tells this instance's control messages from other instances'
        self.instance_id = uuid.uuid4().hex
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control: list[Subscription] = []
        self.admission = Admission(kernel, self.config, self.metrics)
        self.topics = TopicRouter(
            kernel, self.metrics, self.spawn, self.admission.connections_of, self.instance_id
        )
        self.dispatcher = Dispatcher(self.metrics, self.spawn, self.config.handler_timeout)
        self._drops = DropListeners()
        self._round_writer = RoundWriter()
        #: every open connection of this instance
        self.connections = self.admission.connections
        #: frame type → handler, and the plugin owning each
        self.handlers = self.dispatcher.handlers
        self.owners = self.dispatcher.owners
        # (Host, bound once: on the fan-out's path)
        self.flush_soon = self._round_writer.schedule
        self.tell_dropped = self._drops.tell
        self.outbound_counter = self.metrics.outbound

    @property
    def accepting(self) -> bool:
        return self.admission.accepting

    # -- start-up and shutdown --------------------------------------------------------
    def install_handlers(self, handlers: Iterable[tuple[str, tuple[str, WsHandler]]]) -> None:
        self.dispatcher.install(
            handlers,
            {
                "subscribe": self.topics.client_subscribe,
                "unsubscribe": self.topics.client_unsubscribe,
            },
        )

    async def start(self) -> None:
        self._control = [await self.admission.start(), await self.topics.start()]

    async def close(self) -> None:
        await self.shutdown()
        for sub in self._control:
            with contextlib.suppress(Exception):
                await sub.close()
        self._control = []
        self.dispatcher.close()
        if self._tasks:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def shutdown(self) -> None:
        """Close every connection with 1001 GOING_AWAY (app shutdown)."""
        self.admission.close_all(CLOSE_GOING_AWAY, "server shutting down")
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.config.close_timeout + 1)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        """Run ``coro`` as a task the gateway owns (cancelled and awaited by ``close``)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- serving (serving.py) -------------------------------------------------------------
    async def serve_ws(self, request: web.Request) -> web.StreamResponse:
        return await serving.serve_ws(self, request)

    async def serve_sse(self, request: web.Request, topics: list[str]) -> web.StreamResponse:
        return await serving.serve_sse(self, request, topics)

    async def authenticate(self, request: web.Request) -> Any:
        """The principal of a connection request, or a Problem (before any upgrade)."""
        return await self.admission.authenticate(request)

    # -- slow consumers (connection.py) ---------------------------------------------------
    def on_dropped(self, listener: Callable[[Connection, list[str]], None]) -> None:
        """Call ``listener(conn, frames)`` with the encoded frames a slow consumer's
        queue dropped (plugins count their own events, e.g. chat's messages)."""
        self._drops.add(listener)

    # -- publishing and topics (topics.py) ------------------------------------------------
    async def publish(self, topic: str, event_type: str, data: Any) -> bool:
        """Deliver an event to a topic's sockets on every instance. Never raises:
        ``False`` (and ``websocket_publish_errors_total``) when other instances could
        not be reached — local sockets got it anyway."""
        return await (await self.topics.post(topic, event_type, data))

    async def post(self, topic: str, event_type: str, data: Any) -> asyncio.Future[bool]:
        """:meth:`publish` in two steps: returns once this instance's sockets have the
        event, with a future that resolves (never raises) to whether the other
        instances were reached; events posted in turn leave in that order."""
        return await self.topics.post(topic, event_type, data)

    async def publish_to_user(self, user_id: str, event_type: str, data: Any) -> bool:
        return await self.publish(USER_TOPIC_PREFIX + str(user_id), event_type, data)

    async def add_user_to_topic(self, user_id: str, topic: str) -> None:
        await self.topics.control_all("add", str(user_id), topic)

    async def remove_user_from_topic(self, user_id: str, topic: str) -> None:
        await self.topics.control_all("remove", str(user_id), topic)

    async def authorize_topic(self, principal: Any, topic: str) -> bool:
        """Deny by default: allowed when ≥1 plugin says True and none False
        (an exception counts as False). ``user:<id>`` only for its own user."""
        return await self.topics.authorize(principal, topic)

    def topic_count(self) -> int:
        return self.topics.count()

    async def attach(self, topic: str, conn: Connection) -> None:
        await self.topics.attach(topic, conn)

    async def detach(self, topic: str, conn: Connection) -> None:
        await self.topics.detach(topic, conn)
