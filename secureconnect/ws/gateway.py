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
from ..errors import ConfigError, Forbidden, Problem, Unauthorized
from .config import GatewayConfig
from .connection import Connection, DropListeners, RoundWriter, SseConnection, WsConnection
from .frames import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    SSE_CONNECTED,
    SSE_KEEPALIVE,
    BadFrame,
    ack_frame,
    decode,
    encode,
    error_frame,
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

WsHandler = Callable[[Connection, dict[str, Any]], Awaitable[Any]]


class Deferred:
    """Returned by a handler: ``awaitable`` finishes the frame; its result is the ack."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


class Deadlines:
    """Bounds the tasks awaiting frame handlers with one loop timer for all of them.

    ``asyncio.timeout`` schedules a timer per use and leaves it cancelled in the loop's
    heap; at thousands of frames a second (two uses per chat send) that heap grows to
    tens of thousands and every push pays for it. Here a task is noted with its
    deadline, and while anything is noted a sweep runs every ``tick`` seconds and
    cancels the tasks past theirs. A deadline is kept at most ``tick`` late — a quarter
    of the timeout, at most a second — which is fine for a bound meant to catch stuck
    work. Since every deadline is ``now + timeout``, the notes are in deadline order
    and a sweep stops at the first one not yet due.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, timeout / 4)
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def enter(self, task: asyncio.Task[Any]) -> int:
        """Note ``task``; returns what :meth:`leave` needs (its pending cancellations)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._due.pop(task, None)  # (re-noted: keep the notes in deadline order)
        self._due[task] = now + self.timeout
        if self._timer is None:
            self._timer = loop.call_at(now + self.tick, self._sweep)
        return task.cancelling()

    def leave(self, task: asyncio.Task[Any], cancelling: int) -> bool:
        """Forget ``task``; True when its deadline cancelled it (and nothing else did)."""
        self._due.pop(task, None)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() <= cancelling

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        late = []
        for task, due in self._due.items():
            if due > now:
                break
            late.append(task)
        for task in late:
            del self._due[task]
            self._expired.add(task)
            task.cancel()
        if self._due:
            self._timer = loop.call_at(now + self.tick, self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Gateway:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.config = GatewayConfig.from_settings(kernel.settings.get("ws"))
        self.handlers: dict[str, WsHandler] = {}
        self.owners: dict[str, str] = {}
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
        self._deadlines = Deadlines(self.config.handler_timeout)

    # -- start-up ---------------------------------------------------------------------
    def install_handlers(self, handlers: Iterable[tuple[str, tuple[str, WsHandler]]]) -> None:
        for plugin, (event_type, handler) in handlers:
            if event_type in self.handlers or event_type in ("subscribe", "unsubscribe"):
                owner = self.owners.get(event_type, "ws")
                raise ConfigError(
                    f"WebSocket event {event_type!r} is handled by both plugin "
                    f"'{owner}' and plugin '{plugin}'; disable one of them"
                )
            self.handlers[event_type] = handler
            self.owners[event_type] = plugin
        self.handlers["subscribe"] = self.topics.client_subscribe
        self.handlers["unsubscribe"] = self.topics.client_unsubscribe
        self.owners.setdefault("subscribe", "ws")
        self.owners.setdefault("unsubscribe", "ws")

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
        self._deadlines.close()
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
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._dispatch(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._error(conn, None, "bad_envelope", "frames are JSON text")
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

    async def _dispatch(self, conn: Connection, raw: str) -> None:
        try:
            frame_id, event_type, data = decode(raw)
        except BadFrame as bad:
            self.metrics.messages.labels("in", "invalid").inc()
            self._error(conn, bad.frame_id, bad.code, bad.message)
            return
        handler = self.handlers.get(event_type)
        label = event_type if handler else "unknown"
        self.metrics.inbound(label)  # handler types and "unknown" only: bounded
        if not conn.allow_inbound():
            self._error(conn, frame_id, "rate_limited", "too many frames; slow down")
            return
        if handler is None:
            self._error(conn, frame_id, "unknown_type", f"unknown frame type {event_type!r}")
            return
        result = await self._answer(conn, frame_id, event_type, handler(conn, data))
        if isinstance(result, Deferred):
            # Started at once, so the work always runs and cleans up after itself (chat's
            # place in line is released by it) even if this socket is going away; then
            # back-pressure: past ws.max_deferred the socket's reads wait for a slot.
            task = self.spawn(self._answer(conn, frame_id, event_type, result.awaitable))
            task.add_done_callback(lambda _: conn.deferred.release())
            await conn.deferred.acquire()

    async def _answer(self, conn: Connection, frame_id: Any, event_type: str,
                      work: Awaitable[Any]) -> Any:
        """Await a handler's work; ack or error the frame (a Deferred is passed back)."""
        task = asyncio.current_task()
        assert task is not None
        deadlines = self._deadlines
        cancelling = deadlines.enter(task)
        timed_out = False
        try:
            try:
                result = await work
            finally:
                timed_out = deadlines.leave(task, cancelling)
        except asyncio.CancelledError:
            if not timed_out:
                raise
            self._error(conn, frame_id, "timeout", "the handler took too long")
            return None
        except Problem as problem:
            self._error(conn, frame_id, problem.code, problem.detail)
            return None
        except TimeoutError:
            self._error(conn, frame_id, "timeout", "the handler took too long")
            return None
        except Exception:
            log.exception("WebSocket handler for %r failed", event_type)
            self._error(conn, frame_id, "internal_error", "the server failed on this frame")
            return None
        if isinstance(result, Deferred):
            return result
        if frame_id is not None:
            conn.enqueue(ack_frame(result, frame_id))
        return None

    def _error(self, conn: Connection, frame_id: Any, code: str, message: str) -> None:
        self.metrics.errors.labels(code).inc()
        conn.enqueue(error_frame(code, message, frame_id))

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
