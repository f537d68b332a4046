"""Connections: per-socket state, the bounded send queue, direct writes, slow consumers.

Owns
    :class:`Connection` (what plugins and handlers receive: ``user_id``,
    ``session_id``, ``principal``, ``subscribe``, ``unsubscribe``, ``send``) and its two
    transports, :class:`WsConnection` and :class:`SseConnection`; the inbound token
    bucket; the slow-consumer policy (``ws.slow_consumer``: a ``resync`` notice or a
    1013 close) and the listeners told which frames were dropped; :class:`RoundWriter`,
    which writes what each socket gathered in one loop round.

Guarantees
    * ``send``/``enqueue`` never block and never raise; a connection's queue never holds
      more than ``ws.send_queue_size`` frames (an overflow leaves only the ``resync``
      notice in it).
    * Frames reach a socket in the order they were enqueued, whichever path each takes:
      a frame goes the direct way only while nothing is queued, and the writer writes
      the frames gathered for the direct way before each queued one
      (``tests/ws/test_invariants.py``).
    * Once closing, a connection takes no frames and ``next_frame`` returns ``None``.
    * Every dropped frame is counted (``websocket_send_queue_dropped_total``) and shown
      to the drop listeners (chat counts its own messages among them).

Called by
    ``topics`` (fan-out: ``enqueue`` with the frame already framed), ``dispatch`` (acks
    and errors), ``admission`` (close requests, expiry), ``serving`` (the writer and the
    SSE loop), plugins (``send``/``subscribe``). A connection reaches the rest of the
    gateway only through :class:`Host`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from .frames import CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER, encode, resync_frame, text_frame

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

DropListener = Callable[["Connection", list[str]], None]


class Host(Protocol):
    """What a connection uses of the gateway that made it (``Gateway`` provides it)."""

    config: GatewayConfig
    metrics: GatewayMetrics

    def spawn(self, work: Awaitable[Any]) -> asyncio.Future[Any]: ...

    def flush_soon(self, conn: WsConnection) -> None: ...

    def tell_dropped(self, conn: Connection, frames: list[str]) -> None: ...

    async def attach(self, topic: str, conn: Connection) -> None: ...

    async def detach(self, topic: str, conn: Connection) -> None: ...


class Connection:
    """One authenticated client connection (WebSocket or event stream).

    Frames leave through a bounded queue and one writer; ``send`` never blocks.
    """

    transport = "ws"

    def __init__(self, gateway: Host, principal: Any) -> None:
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
        #: closes the connection when its token expires (set by admission)
        self.expiry: asyncio.TimerHandle | None = None
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
            await self.gateway.attach(topic, self)
        except BaseException:
            self.topics.discard(topic)
            raise

    async def unsubscribe(self, topic: str) -> None:
        if topic in self.topics:
            self.topics.discard(topic)
            await self.gateway.detach(topic, self)

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
        # the slow-consumer policy: nothing else waits for this connection
        dropped = len(self._queue) + 1
        self.dropped += dropped
        self.gateway.metrics.dropped.inc(dropped)
        self.gateway.tell_dropped(self, [f for f in (*self._queue, text) if f])
        self._queue.clear()
        if self.gateway.config.slow_consumer == "close":
            self.request_close(CLOSE_TRY_AGAIN_LATER, "slow consumer")
            return
        # The client re-reads history; what stays queued is the notice first.
        self._queue.append(resync_frame("slow_consumer", dropped))
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
        self.gateway.spawn(self.close_transport())

    def halt(self) -> None:
        """The serving task is finishing: take no more frames, wake the writer."""
        self.closing = True
        self._wakeup.set()

    async def close_transport(self) -> None:
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

    def __init__(self, gateway: Host, principal: Any, ws: web.WebSocketResponse) -> None:
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
        # bound once: both are on the fan-out's path
        self._flush_soon = gateway.flush_soon
        self._count_out = gateway.metrics.outbound

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
        # Only while nothing is queued: a frame must never overtake a queued one.
        if direct is not None and not self._queue and not self.closing:
            # (a socket that is closing drops these in flush_out)
            if not self._out:  # the transport's backlog only changes when we flush
                self._out_bytes = direct.get_write_buffer_size()
            if self._out_bytes < self._write_limit:
                if wire is None:
                    wire = text_frame(text.encode())
                    self._count_out(text)
                # (a topic's fan-out counts once for all its sockets)
                if not self._out:
                    self._flush_soon(self)
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
        sent = self._count_out
        while True:
            frame = await self.next_frame()
            if frame is None:
                return
            self.flush_out()  # frames gathered before this one leave first
            await self.ws.send_str(frame)
            sent(frame)

    async def close_transport(self) -> None:
        if self.writer is not None and not self.writer.done():
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.writer
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.gateway.config.close_timeout):
                await self.ws.close(code=self.close_code, message=self.close_reason.encode())


class SseConnection(Connection):
    transport = "sse"

    def __init__(self, gateway: Host, principal: Any) -> None:
        super().__init__(gateway, principal)
        self.task: asyncio.Task[Any] | None = None

    async def close_transport(self) -> None:
        # the serving task sees the closing flag; a write stuck on a dead peer is cut
        if self.task is None or self.task.done():
            return
        await asyncio.wait({self.task}, timeout=self.gateway.config.close_timeout)
        if not self.task.done():
            self.task.cancel()


class RoundWriter:
    """Writes, once the loop finishes its current round, the frames each WebSocket
    gathered for the direct way in it (see :meth:`WsConnection.write_directly`)."""

    def __init__(self) -> None:
        self._pending: list[WsConnection] = []

    def schedule(self, conn: WsConnection) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush_all)
        self._pending.append(conn)

    def _flush_all(self) -> None:
        conns, self._pending = self._pending, []
        for conn in conns:
            try:
                conn.flush_out()
            except Exception:  # one broken socket must not keep frames from the others
                log.debug("writing to a WebSocket failed", exc_info=True)


class DropListeners:
    """Who is told which encoded frames a slow consumer's queue dropped."""

    def __init__(self) -> None:
        self._listeners: list[DropListener] = []

    def add(self, listener: DropListener) -> None:
        self._listeners.append(listener)

    def tell(self, conn: Connection, frames: list[str]) -> None:
        for listener in self._listeners:
            try:
                listener(conn, frames)
            except Exception:
                log.exception("a dropped-frames listener failed")
