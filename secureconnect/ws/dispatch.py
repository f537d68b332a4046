"""Dispatch: client frames to handlers, with deadlines and deferred answers.

Owns
    The handler table (``sc_ws_handlers`` plus the gateway's own ``subscribe`` /
    ``unsubscribe``, a clash between plugins is a start-up error naming both);
    reading a client's envelope (through ``frames.decode``), the inbound rate limit's
    answer, one frame's ``ack`` or ``error``; :class:`Deadlines` (``ws.handler_timeout``
    for every handler, one loop timer for all); :class:`Deferred` answers and the
    per-socket bound on them (``ws.max_deferred``).

Guarantees
    * While the socket is open, every frame with an ``id`` gets exactly one ``ack`` or
      ``error``; a handler that raises, times out or crashes never ends the read loop.
    * A socket's frames are handled one after another; a handler's quick part runs in
      frame order. Work a handler returns as :class:`Deferred` is started at once and
      always runs (even when the socket goes away meanwhile), so what it cleans up is
      cleaned up; its slot is released however it ends (returns, raises, times out).
      ``tests/ws/test_invariants.py`` holds both.
    * Past ``ws.max_deferred`` frames in flight, the socket's reads wait for a slot.

Called by
    ``serving`` (each text frame of a WebSocket; ``error`` for binary frames) and the
    ``Gateway`` facade (``install_handlers`` at start-up, ``close``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, Problem
from .frames import BadFrame, ack_frame, decode, error_frame

if TYPE_CHECKING:
    from .connection import Connection
    from .metrics import GatewayMetrics

log = logging.getLogger(__name__)

WsHandler = Callable[["Connection", dict[str, Any]], Awaitable[Any]]


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


class Dispatcher:
    def __init__(
        self,
        metrics: GatewayMetrics,
        spawn: Callable[[Awaitable[Any]], asyncio.Future[Any]],
        handler_timeout: float,
    ) -> None:
        self.metrics = metrics
        self._spawn = spawn
        self.handlers: dict[str, WsHandler] = {}
        #: the plugin handling each frame type (``ws``: the gateway itself)
        self.owners: dict[str, str] = {}
        self._deadlines = Deadlines(handler_timeout)

    def install(
        self,
        handlers: Iterable[tuple[str, tuple[str, WsHandler]]],
        builtins: dict[str, WsHandler],
    ) -> None:
        """The plugins' handlers (``(plugin, (type, handler))``) and the gateway's own."""
        for plugin, (event_type, handler) in handlers:
            if event_type in self.handlers or event_type in builtins:
                owner = self.owners.get(event_type, "ws")
                raise ConfigError(
                    f"WebSocket event {event_type!r} is handled by both plugin "
                    f"'{owner}' and plugin '{plugin}'; disable one of them"
                )
            self.handlers[event_type] = handler
            self.owners[event_type] = plugin
        for event_type, handler in builtins.items():
            self.handlers[event_type] = handler
            self.owners.setdefault(event_type, "ws")

    def close(self) -> None:
        self._deadlines.close()

    async def dispatch(self, conn: Connection, raw: str) -> None:
        """Handle one client text frame; returns when the socket may read the next."""
        try:
            frame_id, event_type, data = decode(raw)
        except BadFrame as bad:
            self.metrics.messages.labels("in", "invalid").inc()
            self.error(conn, bad.frame_id, bad.code, bad.message)
            return
        handler = self.handlers.get(event_type)
        label = event_type if handler else "unknown"
        self.metrics.inbound(label)  # handler types and "unknown" only: bounded
        if not conn.allow_inbound():
            self.error(conn, frame_id, "rate_limited", "too many frames; slow down")
            return
        if handler is None:
            self.error(conn, frame_id, "unknown_type", f"unknown frame type {event_type!r}")
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
            self.error(conn, frame_id, "timeout", "the handler took too long")
            return None
        except Problem as problem:
            self.error(conn, frame_id, problem.code, problem.detail)
            return None
        except TimeoutError:
            self.error(conn, frame_id, "timeout", "the handler took too long")
            return None
        except Exception:
            log.exception("WebSocket handler for %r failed", event_type)
            self.error(conn, frame_id, "internal_error", "the server failed on this frame")
            return None
        if isinstance(result, Deferred):
            return result
        if frame_id is not None:
            conn.enqueue(ack_frame(result, frame_id))
        return None

    def error(self, conn: Connection, frame_id: Any, code: str, message: str) -> None:
        """Answer a frame (``frame_id`` ``None``: unknown) with an ``error`` frame."""
        self.metrics.errors.labels(code).inc()
        conn.enqueue(error_frame(code, message, frame_id))
