"""Serving: the life of one connection request, WebSocket (``/v1/ws``) or SSE
(``/v1/events``), from admission to unregistering.

Owns
    The order of a connection's life: admitted → registered (subscribed to its own and
    the plugins' topics) → upgraded → writer started → frames read and dispatched →
    writer stopped → unregistered; the WebSocket's aiohttp settings (heartbeat, frame
    size, close timeout); the SSE stream's keep-alives.

Guarantees
    * Everything published after the client sees the upgrade reaches the socket: the
      connection is registered and subscribed before ``prepare`` answers it.
    * The slot admission reserved is released exactly once, on every path.
    * Unregistering runs to its end even when the serving task is cancelled (an owned,
      shielded task), so no topic, index entry or gauge is left behind.

Called by
    The ``Gateway`` facade's ``serve_ws`` / ``serve_sse`` (routes in
    ``secureconnect/builtin/ws.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from aiohttp import WSCloseCode, WSMsgType, web

from ..errors import Forbidden
from .connection import SseConnection, WsConnection
from .frames import CLOSE_TRY_AGAIN_LATER, SSE_CONNECTED, SSE_KEEPALIVE, sse_event

if TYPE_CHECKING:
    from .gateway import Gateway


async def serve_ws(gateway: Gateway, request: web.Request) -> web.StreamResponse:
    admission, config = gateway.admission, gateway.config
    principal = await admission.authenticate(request)
    ws = web.WebSocketResponse(
        heartbeat=config.heartbeat,
        max_msg_size=config.max_frame_bytes,
        timeout=config.close_timeout,
    )
    conn = WsConnection(gateway, principal, ws)
    try:
        try:
            # Subscribed (own topic and the plugins' topics) *before* the client sees
            # the upgrade: everything published after it reaches this socket, queued
            # until the writer starts.
            await admission.register(conn)
        finally:
            admission.release(principal)  # counted by register from its first line
        await ws.prepare(request)
        conn.writer = asyncio.ensure_future(conn.write_loop())
        conn.write_directly(request.transport)
        if conn.closing:  # closed while upgrading (revoked, overflowed)
            await conn.close_transport()
            return ws
        dispatch = gateway.dispatcher.dispatch
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await dispatch(conn, msg.data)
            elif msg.type == WSMsgType.BINARY:
                gateway.dispatcher.error(conn, None, "bad_envelope", "frames are JSON text")
            elif msg.type == WSMsgType.ERROR:
                if ws.close_code == WSCloseCode.MESSAGE_TOO_BIG:
                    gateway.metrics.errors.labels("frame_too_large").inc()
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
        await asyncio.shield(gateway.spawn(admission.unregister(conn)))
        if conn.close_code == CLOSE_TRY_AGAIN_LATER:
            gateway.metrics.errors.labels("slow_consumer").inc()
    return ws


async def serve_sse(
    gateway: Gateway, request: web.Request, topics: list[str]
) -> web.StreamResponse:
    admission, config = gateway.admission, gateway.config
    principal = await admission.authenticate(request)
    try:
        for topic in topics:
            if not await gateway.topics.authorize(principal, topic):
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
        admission.release(principal)  # no await until register adds the connection
    conn = SseConnection(gateway, principal)
    conn.task = asyncio.current_task()
    count_out = gateway.metrics.outbound
    try:
        await admission.register(conn)
        for topic in topics:
            await conn.subscribe(topic)
        await resp.write(SSE_CONNECTED)
        while True:
            frame = await conn.next_frame(config.sse_keepalive)
            if frame is None:
                break
            if frame == "":
                await resp.write(SSE_KEEPALIVE)
                continue
            await resp.write(sse_event(frame))
            count_out(frame)
    except ConnectionResetError:
        pass  # the client went away
    except asyncio.CancelledError:
        if not conn.close_reason:  # not our own cut of a stuck write: propagate
            raise
    finally:
        conn.closing = True
        # owned, and finished even when the serving task is cancelled
        await asyncio.shield(gateway.spawn(admission.unregister(conn)))
    return resp
