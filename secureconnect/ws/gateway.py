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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..auth.service import REVOKED_TOPIC
from ..errors import Forbidden, Problem, Unauthorized
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
    SSE_CONNECTED,
    SSE_KEEPALIVE,
    encode,
    sse_event,
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

log = logging.getLogger(__name__)

class Gateway:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.config = GatewayConfig.from_settings(kernel.settings.get("ws"))
        self.connections: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}
        self._by_session: dict[str, set[Connection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control: list[Subscription] = []
        self._reserved: dict[str, int] = {}
        self._reserved_total = 0
        #: tells this instance's control messages from other instances'
        self.instance_id = uuid.uuid4().hex
        self.accepting = True
        self.metrics = GatewayMetrics(kernel.metrics)
        self.outbound_counter = self.metrics.outbound
        self._round_writer = RoundWriter()
        #: (Host) WebSockets with frames gathered this round
        self.flush_soon = self._round_writer.schedule
        self._drops = DropListeners()
        self.tell_dropped = self._drops.tell
        self.topics = TopicRouter(
            kernel,
            self.metrics,
            self.spawn,
            lambda user_id: self._by_user.get(user_id, ()),
            self.instance_id,
        )
        self.dispatcher = Dispatcher(self.metrics, self.spawn, self.config.handler_timeout)
        #: frame type → handler, and the plugin owning each (see dispatch.py)
        self.handlers = self.dispatcher.handlers
        self.owners = self.dispatcher.owners

    # -- start-up ---------------------------------------------------------------------
    def install_handlers(self, handlers: Iterable[tuple[str, tuple[str, WsHandler]]]) -> None:
        self.dispatcher.install(
            handlers,
            {
                "subscribe": self.topics.client_subscribe,
                "unsubscribe": self.topics.client_unsubscribe,
            },
        )

    async def start(self) -> None:
        self.accepting = True
        self._control = [
            await self.kernel.bus.subscribe(REVOKED_TOPIC, self._on_revoked),
            await self.topics.start(),
        ]

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
        self.accepting = False
        for conn in list(self.connections):
            conn.request_close(CLOSE_GOING_AWAY, "server shutting down")
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.config.close_timeout + 1)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- slow consumers -----------------------------------------------------------------
    def on_dropped(self, listener: Callable[[Connection, list[str]], None]) -> None:
        """Call ``listener(conn, frames)`` with the encoded frames a slow consumer's
        queue dropped (plugins count their own events, e.g. chat's messages)."""
        self._drops.add(listener)

    # -- publishing -------------------------------------------------------------------
    async def publish(self, topic: str, event_type: str, data: Any) -> bool:
        """Deliver an event to a topic's sockets on every instance. Never raises:
        ``False`` (and ``websocket_publish_errors_total``) when other instances could
        not be reached — local sockets got it anyway."""
        return await (await self.post(topic, event_type, data))

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

    def _on_revoked(self, _topic: str, message: bytes) -> None:
        try:
            body = json.loads(message)
            sessions = [str(s) for s in body.get("session_ids") or ()]
        except (ValueError, AttributeError, TypeError):
            log.warning("ignored a malformed %s message", REVOKED_TOPIC)
            return
        for sid in sessions:
            for conn in list(self._by_session.get(sid, ())):
                conn.request_close(CLOSE_POLICY, "session revoked")

    # -- topics (see topics.py) ---------------------------------------------------------
    def topic_count(self) -> int:
        return self.topics.count()

    async def attach(self, topic: str, conn: Connection) -> None:
        await self.topics.attach(topic, conn)

    async def detach(self, topic: str, conn: Connection) -> None:
        await self.topics.detach(topic, conn)

    async def authorize_topic(self, principal: Any, topic: str) -> bool:
        """Deny by default: allowed when ≥1 plugin says True and none False
        (an exception counts as False). ``user:<id>`` only for its own user."""
        return await self.topics.authorize(principal, topic)

    # -- connection lifecycle ---------------------------------------------------------
    async def authenticate(self, request: web.Request) -> Any:
        """The principal of a connection request, or a Problem (before any upgrade)."""
        from ..http.handlers import bearer_token

        if not self.accepting:
            raise Problem(
                "the server is shutting down",
                code="shutting_down",
                status=503,
                title="Service Unavailable",
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            self.metrics.refused.labels("origin").inc()
            raise Forbidden("this origin may not open a connection", code="origin_forbidden")
        token = bearer_token(request) or request.query.get("access_token")
        if not token:
            self.metrics.unauthorized.inc()
            raise Unauthorized("an access token is required", code="missing_token")
        try:
            principal = await self.kernel.auth.authenticate(token)
        except Unauthorized:
            self.metrics.unauthorized.inc()
            raise
        # A slot is reserved until the connection registers: concurrent upgrades of
        # one user cannot slip past the limit while they await the handshake.
        user_id = str(principal.user_id)
        if len(self.connections) + self._reserved_total >= self.config.max_connections:
            self.metrics.refused.labels("global_limit").inc()
            raise Problem(
                "too many connections on this server",
                code="too_many_connections",
                status=503,
                title="Service Unavailable",
                headers={"Retry-After": "5"},
            )
        if (
            len(self._by_user.get(user_id, ())) + self._reserved.get(user_id, 0)
            >= self.config.max_connections_per_user
        ):
            self.metrics.refused.labels("user_limit").inc()
            raise Problem(
                "too many open connections for this user",
                code="too_many_connections",
                status=429,
                title="Too Many Requests",
                headers={"Retry-After": "5"},
            )
        self._reserved[user_id] = self._reserved.get(user_id, 0) + 1
        self._reserved_total += 1
        return principal

    def _release(self, principal: Any) -> None:
        user_id = str(principal.user_id)
        left = self._reserved.get(user_id, 0) - 1
        if left > 0:
            self._reserved[user_id] = left
        else:
            self._reserved.pop(user_id, None)
        self._reserved_total -= 1

    def _origin_allowed(self, origin: str) -> bool:
        allowed = {str(o) for o in self.kernel.settings.cors.allow_origins}
        public = str(self.kernel.settings.app.public_url).rstrip("/")
        return "*" in allowed or origin in allowed or origin == public

    async def _register(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._by_user.setdefault(conn.user_id, set()).add(conn)
        self._by_session.setdefault(conn.session_id, set()).add(conn)
        self.metrics.connections.labels(conn.transport).inc()
        expires = float(getattr(conn.principal, "expires_at", 0.0) or 0.0)
        if expires:
            loop = asyncio.get_running_loop()
            delay = max(0.0, expires - time.time())
            conn.expiry = loop.call_later(delay, conn.request_close, CLOSE_POLICY, "token expired")
        await conn.subscribe(USER_TOPIC_PREFIX + conn.user_id)
        await self.kernel.notify("sc_ws_connected", conn=conn)

    async def _unregister(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        conn.closing = True
        if conn.expiry is not None:
            conn.expiry.cancel()
        self.connections.discard(conn)
        for index, key in ((self._by_user, conn.user_id), (self._by_session, conn.session_id)):
            group = index.get(key)
            if group is not None:
                group.discard(conn)
                if not group:
                    del index[key]
        self.metrics.connections.labels(conn.transport).dec()
        for topic in list(conn.topics):
            await conn.unsubscribe(topic)
        await self.kernel.notify("sc_ws_disconnected", conn=conn)

    # -- WebSocket --------------------------------------------------------------------
    async def serve_ws(self, request: web.Request) -> web.StreamResponse:
        principal = await self.authenticate(request)
        ws = web.WebSocketResponse(
            heartbeat=self.config.heartbeat,
            max_msg_size=self.config.max_frame_bytes,
            timeout=self.config.close_timeout,
        )
        conn = WsConnection(self, principal, ws)
        try:
            try:
                # Subscribed (own topic and the plugins' topics) *before* the client sees
                # the upgrade: everything published after it reaches this socket, queued
                # until the writer starts.
                await self._register(conn)
            finally:
                self._release(principal)  # counted by _register from its first line
            await ws.prepare(request)
            conn.writer = asyncio.ensure_future(conn.write_loop())
            conn.write_directly(request.transport)
            if conn.closing:  # closed while upgrading (revoked, overflowed)
                await conn.close_transport()
                return ws
            dispatch = self.dispatcher.dispatch
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await dispatch(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.dispatcher.error(conn, None, "bad_envelope", "frames are JSON text")
                elif msg.type == WSMsgType.ERROR:
                    if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                        self.metrics.errors.labels("frame_too_large").inc()
                    break
                if conn.closing:
                    break
        finally:
            conn.halt()
            if conn.writer is not None and not conn.writer.done():
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.writer
            # owned, and finished even when the serving task is cancelled
            await asyncio.shield(self.spawn(self._unregister(conn)))
            if conn.close_code == CLOSE_TRY_AGAIN_LATER:
                self.metrics.errors.labels("slow_consumer").inc()
        return ws

    # -- Server-Sent Events -----------------------------------------------------------
    async def serve_sse(self, request: web.Request, topics: list[str]) -> web.StreamResponse:
        principal = await self.authenticate(request)
        try:
            for topic in topics:
                if not await self.authorize_topic(principal, topic):
                    raise Forbidden(f"you may not subscribe to {topic}", code="topic_forbidden")
            resp = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await resp.prepare(request)
        finally:
            self._release(principal)  # no await until _register adds the connection
        conn = SseConnection(self, principal)
        conn.task = asyncio.current_task()
        try:
            await self._register(conn)
            for topic in topics:
                await conn.subscribe(topic)
            await resp.write(SSE_CONNECTED)
            while True:
                frame = await conn.next_frame(self.config.sse_keepalive)
                if frame is None:
                    break
                if frame == "":
                    await resp.write(SSE_KEEPALIVE)
                    continue
                await resp.write(sse_event(frame))
                self.outbound_counter(frame)
        except ConnectionResetError:
            pass  # the client went away
        except asyncio.CancelledError:
            if not conn.close_reason:  # not our own cut of a stuck write: propagate
                raise
        finally:
            conn.closing = True
            # owned, and finished even when the serving task is cancelled
            await asyncio.shield(self.spawn(self._unregister(conn)))
        return resp
