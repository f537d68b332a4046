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
import struct
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from .. import hooks
from ..auth.service import REVOKED_TOPIC
from ..errors import ConfigError, Forbidden, Problem, Unauthorized
from ..store.bus import resolved

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..store.bus import Subscription

log = logging.getLogger(__name__)

#: bus topic carrying ``{"op": "add"|"remove", "user_id": ..., "topic": ...}``
CONTROL_TOPIC = "ws:control"
USER_TOPIC_PREFIX = "user:"

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class Connection:
    """One authenticated client connection (WebSocket or event stream).

    Frames leave through a bounded queue and one writer; ``send`` never blocks.
    """

    transport = "ws"

    def __init__(self, gateway: Gateway, principal: Any) -> None:
        self.gateway = gateway
        self.principal = principal
        self.user_id = str(principal.user_id)
        self.session_id = str(principal.session_id)
        self.topics: set[str] = set()
        self.closing = False
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.dropped = 0
        self._queue: deque[str | None] = deque()
        self._limit = gateway.config.send_queue_size
        self._wakeup = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None
        #: slots for frames whose handler returned Deferred and is still running (the
        #: frame being dispatched is started before it waits, hence one fewer)
        self.deferred = asyncio.Semaphore(gateway.config.max_deferred - 1)
        # inbound token bucket
        self._tokens = float(gateway.config.inbound_burst)
        self._refilled = time.monotonic()

    # -- what plugins call --------------------------------------------------------------
    async def subscribe(self, topic: str) -> None:
        """Deliver ``topic`` to this connection (no authorization: the caller decides)."""
        if topic in self.topics or self.closing:
            return
        self.topics.add(topic)
        try:
            await self.gateway._attach(topic, self)
        except BaseException:
            self.topics.discard(topic)
            raise

    async def unsubscribe(self, topic: str) -> None:
        if topic in self.topics:
            self.topics.discard(topic)
            await self.gateway._detach(topic, self)

    async def send(self, event_type: str, data: Any) -> None:
        """Queue an event for this connection only."""
        self.enqueue(encode(event_type, data))

    # -- queue ------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._queue)

    def enqueue(self, text: str, wire: bytes | None = None) -> bool:
        """Queue a frame (``wire``: the same frame already framed for a WebSocket, which
        a WebSocket connection may write at once). ``True`` when it was written here and
        now; ``False`` when queued for the writer (or dropped)."""
        if self.closing:
            return False
        if len(self._queue) >= self._limit:
            self._overflow(text)
            return False
        self._queue.append(text)
        self._wakeup.set()
        return False

    def _overflow(self, text: str) -> None:
        dropped = len(self._queue) + 1
        self.dropped += dropped
        self.gateway.m_dropped.inc(dropped)
        self.gateway._tell_dropped(self, [f for f in (*self._queue, text) if f])
        self._queue.clear()
        if self.gateway.config.slow_consumer == "close":
            self.request_close(CLOSE_TRY_AGAIN_LATER, "slow consumer")
            return
        # The client re-reads history; what stays queued is the notice first.
        self._queue.append(encode("resync", {"reason": "slow_consumer", "dropped": dropped}))
        self._wakeup.set()

    async def next_frame(self, timeout: float | None = None) -> str | None:
        """The next queued frame, ``None`` when the connection is closing, or ``""`` when
        ``timeout`` passed with nothing to send."""
        while not self._queue:
            if self.closing:
                return None
            self._wakeup.clear()
            if timeout is None:
                await self._wakeup.wait()
            else:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    return ""
        return self._queue.popleft()

    # -- closing ----------------------------------------------------------------------
    def request_close(self, code: int, reason: str) -> None:
        """Ask the connection to close (from any task; returns at once)."""
        if self.closing:
            return
        self.closing = True
        self.close_code, self.close_reason = code, reason
        self._queue.clear()
        self._wakeup.set()
        self.gateway._spawn(self._close_transport())

    async def _close_transport(self) -> None:
        """Transport specific: make the serving task finish."""

    def allow_inbound(self) -> bool:
        cfg = self.gateway.config
        now = time.monotonic()
        self._tokens = min(
            float(cfg.inbound_burst), self._tokens + (now - self._refilled) * cfg.inbound_rate
        )
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class WsConnection(Connection):
    transport = "ws"

    def __init__(self, gateway: Gateway, principal: Any, ws: web.WebSocketResponse) -> None:
        super().__init__(gateway, principal)
        self.ws = ws
        self.writer: asyncio.Task[None] | None = None
        #: the socket's transport while frames may be written straight to it
        self._direct: asyncio.WriteTransport | None = None
        #: whole frames to write when the loop finishes its current round
        self._out: list[bytes] = []
        #: the transport's unsent bytes when this round began, plus ``_out``'s
        self._out_bytes = 0
        self._write_limit = gateway.config.write_buffer_bytes

    def write_directly(self, transport: Any) -> None:
        """After the upgrade: while nothing is queued and the socket's unsent bytes are
        below ``ws.write_buffer_bytes``, frames skip the queue and the writer task. The
        frames one round of the event loop produces for a socket leave in one write
        (under load, a burst of messages costs one system call per socket, not one per
        message). Not with permessage-deflate: aiohttp compresses those frames."""
        if not self.ws.compress and isinstance(transport, asyncio.WriteTransport):
            self._direct = transport

    def enqueue(self, text: str, wire: bytes | None = None) -> bool:
        direct = self._direct
        if direct is not None and not self._queue and not self.closing:
            # (a socket that is closing drops these in flush_out)
            if not self._out:  # the transport's backlog only changes when we flush
                self._out_bytes = direct.get_write_buffer_size()
            if self._out_bytes < self._write_limit:
                if wire is None:
                    wire = text_frame(text.encode())
                    self.gateway.outbound_counter(text)
                # (a topic's fan-out counts once for all its sockets)
                if not self._out:
                    self.gateway._flush_soon(self)
                self._out.append(wire)
                self._out_bytes += len(wire)
                return True
        return super().enqueue(text)

    def flush_out(self) -> None:
        """Write the frames gathered this round: whole frames, so they never interleave
        with aiohttp's own (pings, close). Dropped once the socket is closing."""
        if not self._out:
            return
        out, self._out, self._out_bytes = self._out, [], 0
        direct = self._direct
        if direct is None or direct.is_closing() or self.ws.closed:
            return
        direct.write(out[0] if len(out) == 1 else b"".join(out))

    async def write_loop(self) -> None:
        sent = self.gateway.outbound_counter
        while True:
            frame = await self.next_frame()
            if frame is None:
                return
            self.flush_out()  # frames gathered before this one leave first
            await self.ws.send_str(frame)
            sent(frame)

    async def _close_transport(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.gateway.config.close_timeout):
                await self.ws.close(code=self.close_code, message=self.close_reason.encode())


class SseConnection(Connection):
    transport = "sse"

    def __init__(self, gateway: Gateway, principal: Any) -> None:
        super().__init__(gateway, principal)
        self.task: asyncio.Task[Any] | None = None

    async def _close_transport(self) -> None:
        # the serving task sees the closing flag; a write stuck on a dead peer is cut
        if self.task is None or self.task.done():
            return
        await asyncio.wait({self.task}, timeout=self.gateway.config.close_timeout)
        if not self.task.done():
            self.task.cancel()


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


_FRAME_HEADER_SHORT = struct.Struct("!BB")
_FRAME_HEADER_MEDIUM = struct.Struct("!BBH")
_FRAME_HEADER_LONG = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """A whole, final, unmasked, uncompressed WebSocket text frame (RFC 6455 §5.2) —
    what a server sends; built once per event and written to every socket as is."""
    size = len(payload)
    if size < 126:
        return _FRAME_HEADER_SHORT.pack(0x81, size) + payload
    if size < 65536:
        return _FRAME_HEADER_MEDIUM.pack(0x81, 126, size) + payload
    return _FRAME_HEADER_LONG.pack(0x81, 127, size) + payload


def encode(event_type: str, data: Any, frame_id: Any = None) -> str:
    frame: dict[str, Any] = {"type": event_type}
    if frame_id is not None:
        frame["id"] = frame_id
    frame["data"] = data
    return json.dumps(frame, separators=(",", ":"), default=str)


@dataclass
class GatewayConfig:
    max_connections: int = 10000
    max_connections_per_user: int = 20
    max_frame_bytes: int = 65536
    send_queue_size: int = 1024
    slow_consumer: str = "resync"
    heartbeat: float = 20.0
    inbound_rate: float = 50.0
    inbound_burst: int = 200
    handler_timeout: float = 10.0
    max_deferred: int = 8
    write_buffer_bytes: int = 65536
    close_timeout: float = 2.0
    sse_keepalive: float = 15.0

    @classmethod
    def from_settings(cls, table: Any) -> GatewayConfig:
        if table is None:
            return cls()
        names = cls.__dataclass_fields__
        return cls(**{k: table[k] for k in names if table.get(k) is not None})


@dataclass
class _Topic:
    conns: set[Connection] = field(default_factory=set)
    sub: Subscription | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False


class Gateway:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.config = GatewayConfig.from_settings(kernel.settings.get("ws"))
        self.handlers: dict[str, WsHandler] = {}
        self.owners: dict[str, str] = {}
        self.connections: set[Connection] = set()
        self._by_user: dict[str, set[Connection]] = {}
        self._by_session: dict[str, set[Connection]] = {}
        self._topics: dict[str, _Topic] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control: list[Subscription] = []
        self._reserved: dict[str, int] = {}
        self._reserved_total = 0
        self._drop_listeners: list[Callable[[Connection, list[str]], None]] = []
        #: tells this instance's control messages from other instances'
        self.instance_id = uuid.uuid4().hex
        self.accepting = True
        m = kernel.metrics
        self.m_connections = m.gauge(
            "websocket_connections", "Open WebSocket/SSE connections", ("transport",)
        )
        self.m_messages = m.counter(
            "websocket_messages_total", "WebSocket frames", ("direction", "type")
        )
        self.m_errors = m.counter(
            "websocket_errors_total", "WebSocket error frames and closes", ("code",)
        )
        self.m_dropped = m.counter(
            "websocket_send_queue_dropped_total",
            "Events dropped because a connection could not keep up",
        )
        self.m_unauthorized = m.counter(
            "websocket_connection_unauthorized_total",
            "Connections refused for a missing/bad/revoked token",
        )
        self.m_refused = m.counter(
            "websocket_connections_refused_total",
            "Connections refused by a limit or the origin check",
            ("reason",),
        )
        self.m_publish_errors = m.counter(
            "websocket_publish_errors_total", "Publishes the bus failed (never raised)"
        )
        self._out_children: dict[str, Any] = {}
        self._in_children: dict[str, Any] = {}
        self._deadlines = Deadlines(self.config.handler_timeout)
        #: sockets with frames gathered this round (see WsConnection.write_directly)
        self._to_flush: list[WsConnection] = []

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
        self.handlers["subscribe"] = self._client_subscribe
        self.handlers["unsubscribe"] = self._client_unsubscribe
        self.owners.setdefault("subscribe", "ws")
        self.owners.setdefault("unsubscribe", "ws")

    async def start(self) -> None:
        self.accepting = True
        self._control = [
            await self.kernel.bus.subscribe(REVOKED_TOPIC, self._on_revoked),
            await self.kernel.bus.subscribe(CONTROL_TOPIC, self._on_control),
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

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Future[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _flush_soon(self, conn: WsConnection) -> None:
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self._flush_all)
        self._to_flush.append(conn)

    def _flush_all(self) -> None:
        conns, self._to_flush = self._to_flush, []
        for conn in conns:
            try:
                conn.flush_out()
            except Exception:  # one broken socket must not keep frames from the others
                log.debug("writing to a WebSocket failed", exc_info=True)

    # -- slow consumers -----------------------------------------------------------------
    def on_dropped(self, listener: Callable[[Connection, list[str]], None]) -> None:
        """Call ``listener(conn, frames)`` with the encoded frames a slow consumer's
        queue dropped (plugins count their own events, e.g. chat's messages)."""
        self._drop_listeners.append(listener)

    def _tell_dropped(self, conn: Connection, frames: list[str]) -> None:
        for listener in self._drop_listeners:
            try:
                listener(conn, frames)
            except Exception:
                log.exception("a dropped-frames listener failed")

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
        try:
            outcome = await self.kernel.bus.post(topic, encode(event_type, data).encode())
        except Exception:
            log.warning("publishing %s to %s failed", event_type, topic, exc_info=True)
            self.m_publish_errors.inc()
            return resolved(False)
        if outcome.done():
            if outcome.result() is False:
                self.m_publish_errors.inc()
        else:
            outcome.add_done_callback(self._count_outcome)
        return outcome

    def _count_outcome(self, outcome: asyncio.Future[bool]) -> None:
        # (cancelled: the caller stopped waiting; the bus sends the event anyway)
        if not outcome.cancelled() and outcome.result() is False:
            self.m_publish_errors.inc()

    async def publish_to_user(self, user_id: str, event_type: str, data: Any) -> bool:
        return await self.publish(USER_TOPIC_PREFIX + str(user_id), event_type, data)

    async def add_user_to_topic(self, user_id: str, topic: str) -> None:
        await self._control_all("add", str(user_id), topic)

    async def remove_user_from_topic(self, user_id: str, topic: str) -> None:
        await self._control_all("remove", str(user_id), topic)

    async def _control_all(self, op: str, user_id: str, topic: str) -> None:
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
        if body.get("origin") == self.instance_id or user_id not in self._by_user:
            return
        # Never wait for bus subscriptions inside the bus's own listener: an owned task.
        self._spawn(self._apply_control(op, user_id, topic))

    async def _apply_control(self, op: str, user_id: str, topic: str) -> None:
        for conn in list(self._by_user.get(user_id, ())):
            try:
                if op == "add":
                    await conn.subscribe(topic)
                elif op == "remove":
                    await conn.unsubscribe(topic)
            except Exception:
                log.warning("could not %s %s for user %s", op, topic, user_id, exc_info=True)

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

    def outbound_counter(self, frame: str, count: int = 1) -> None:
        # the type is the envelope's first key: no need to parse the frame again
        end = frame.find('"', 9)
        event_type = frame[9:end] if frame.startswith('{"type":"') and end > 0 else "unknown"
        child = self._out_children.get(event_type)
        if child is None:
            child = self._out_children[event_type] = self.m_messages.labels("out", event_type)
        child.inc(count)

    # -- topics (one bus subscription per topic per instance) ------------------------
    def topic_count(self) -> int:
        return len(self._topics)

    async def _attach(self, topic: str, conn: Connection) -> None:
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

        def deliver(_topic: str, message: bytes) -> None:
            text = message.decode()
            wire = text_frame(message)  # one frame for every socket
            written = 0
            for target in list(entry.conns):
                if target.enqueue(text, wire):
                    written += 1
            if written:
                self.outbound_counter(text, written)

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

    async def _detach(self, topic: str, conn: Connection) -> None:
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

    # -- authorization ----------------------------------------------------------------
    async def authorize_topic(self, principal: Any, topic: str) -> bool:
        """Deny by default: allowed when ≥1 plugin says True and none False
        (an exception counts as False). ``user:<id>`` only for its own user."""
        if topic.startswith(USER_TOPIC_PREFIX):
            return topic == USER_TOPIC_PREFIX + str(principal.user_id)
        return await hooks.vote(self.kernel, "sc_authorize_topic", user=principal, topic=topic)

    async def _client_subscribe(self, conn: Connection, data: dict[str, Any]) -> Any:
        topic = _topic_of(data)
        if not await self.authorize_topic(conn.principal, topic):
            raise Forbidden("you may not subscribe to this topic", code="topic_forbidden")
        await conn.subscribe(topic)
        return {"topic": topic}

    async def _client_unsubscribe(self, conn: Connection, data: dict[str, Any]) -> Any:
        topic = _topic_of(data)
        await conn.unsubscribe(topic)
        return {"topic": topic}

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
            self.m_refused.labels("origin").inc()
            raise Forbidden("this origin may not open a connection", code="origin_forbidden")
        token = bearer_token(request) or request.query.get("access_token")
        if not token:
            self.m_unauthorized.inc()
            raise Unauthorized("an access token is required", code="missing_token")
        try:
            principal = await self.kernel.auth.authenticate(token)
        except Unauthorized:
            self.m_unauthorized.inc()
            raise
        # A slot is reserved until the connection registers: concurrent upgrades of
        # one user cannot slip past the limit while they await the handshake.
        user_id = str(principal.user_id)
        if len(self.connections) + self._reserved_total >= self.config.max_connections:
            self.m_refused.labels("global_limit").inc()
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
            self.m_refused.labels("user_limit").inc()
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
        self.m_connections.labels(conn.transport).inc()
        expires = float(getattr(conn.principal, "expires_at", 0.0) or 0.0)
        if expires:
            loop = asyncio.get_running_loop()
            delay = max(0.0, expires - time.time())
            conn._expiry = loop.call_later(delay, conn.request_close, CLOSE_POLICY, "token expired")
        await conn.subscribe(USER_TOPIC_PREFIX + conn.user_id)
        await self.kernel.notify("sc_ws_connected", conn=conn)

    async def _unregister(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        conn.closing = True
        if conn._expiry is not None:
            conn._expiry.cancel()
        self.connections.discard(conn)
        for index, key in ((self._by_user, conn.user_id), (self._by_session, conn.session_id)):
            group = index.get(key)
            if group is not None:
                group.discard(conn)
                if not group:
                    del index[key]
        self.m_connections.labels(conn.transport).dec()
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
                await conn._close_transport()
                return ws
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._dispatch(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._error(conn, None, "bad_envelope", "frames are JSON text")
                elif msg.type == WSMsgType.ERROR:
                    if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                        self.m_errors.labels("frame_too_large").inc()
                    break
                if conn.closing:
                    break
        finally:
            conn.closing = True
            conn._wakeup.set()
            if conn.writer is not None and not conn.writer.done():
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.writer
            # owned, and finished even when the serving task is cancelled
            await asyncio.shield(self._spawn(self._unregister(conn)))
            if conn.close_code == CLOSE_TRY_AGAIN_LATER:
                self.m_errors.labels("slow_consumer").inc()
        return ws

    async def _dispatch(self, conn: Connection, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            self.m_messages.labels("in", "invalid").inc()
            self._error(conn, None, "bad_json", "the frame is not JSON")
            return
        if not isinstance(frame, dict):
            self.m_messages.labels("in", "invalid").inc()
            self._error(conn, None, "bad_envelope", "a frame is an object {type, id, data}")
            return
        frame_id = frame.get("id")
        event_type = frame.get("type")
        data = frame.get("data", {})
        if data is None:
            data = {}
        if (
            not isinstance(event_type, str)
            or not isinstance(data, dict)
            or (frame_id is not None and not isinstance(frame_id, str | int))
        ):
            self.m_messages.labels("in", "invalid").inc()
            self._error(
                conn,
                frame_id,
                "bad_envelope",
                "a frame is {type: string, id?: string, data?: object}",
            )
            return
        handler = self.handlers.get(event_type)
        label = event_type if handler else "unknown"
        child = self._in_children.get(label)
        if child is None:  # handler types and "unknown" only: bounded
            child = self._in_children[label] = self.m_messages.labels("in", label)
        child.inc()
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
            task = self._spawn(self._answer(conn, frame_id, event_type, result.awaitable))
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
            conn.enqueue(encode("ack", result, frame_id))
        return None

    def _error(self, conn: Connection, frame_id: Any, code: str, message: str) -> None:
        self.m_errors.labels(code).inc()
        conn.enqueue(encode("error", {"code": code, "message": message}, frame_id))

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
            await resp.write(b": connected\n\n")
            while True:
                frame = await conn.next_frame(self.config.sse_keepalive)
                if frame is None:
                    break
                if frame == "":
                    await resp.write(b": keepalive\n\n")
                    continue
                end = frame.find('"', 9)
                event_type = frame[9:end] if end > 0 else "message"
                await resp.write(f"event: {event_type}\ndata: {frame}\n\n".encode())
                self.outbound_counter(frame)
        except ConnectionResetError:
            pass  # the client went away
        except asyncio.CancelledError:
            if not conn.close_reason:  # not our own cut of a stuck write: propagate
                raise
        finally:
            conn.closing = True
            # owned, and finished even when the serving task is cancelled
            await asyncio.shield(self._spawn(self._unregister(conn)))
        return resp


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
