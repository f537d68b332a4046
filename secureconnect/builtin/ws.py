"""Kernel plugin ``ws``: the WebSocket gateway's settings, routes and resources.

The gateway itself is :class:`secureconnect.ws.gateway.Gateway` (``kernel.ws``); see
docs/websocket.md. Both routes authenticate themselves (the token may come as the
``access_token`` query parameter, which browsers need for WebSocket and EventSource).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from dynaconf import Validator

from .. import hookimpl
from ..kernel import Kernel
from ..routing import Route, RouteTable


@hookimpl(trylast=True)
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("ws.max_connections", is_type_of=int, gte=1, lte=10_000_000),
        Validator("ws.max_connections_per_user", is_type_of=int, gte=1, lte=100_000),
        Validator("ws.max_frame_bytes", is_type_of=int, gte=256, lte=16 * 1024 * 1024),
        Validator("ws.send_queue_size", is_type_of=int, gte=1, lte=1_000_000),
        Validator("ws.slow_consumer", is_in=("resync", "close")),
        Validator("ws.heartbeat", is_type_of=(int, float), gt=0, lte=600),
        Validator("ws.inbound_rate", is_type_of=(int, float), gt=0, lte=100_000),
        Validator("ws.inbound_burst", is_type_of=int, gte=1, lte=1_000_000),
        Validator("ws.handler_timeout", is_type_of=(int, float), gt=0, lte=300),
        Validator("ws.close_timeout", is_type_of=(int, float), gt=0, lte=60),
        Validator("ws.max_deferred", is_type_of=int, gte=1, lte=10_000),
        Validator("ws.write_buffer_bytes", is_type_of=int, gte=1024, lte=64 * 1024 * 1024),
        Validator("ws.sse_keepalive", is_type_of=(int, float), gt=0, lte=600),
    ]


routes = RouteTable(tag="realtime")


def _kernel(request: web.Request) -> Kernel:
    from ..http.context import KERNEL

    return request.app[KERNEL]


# They authenticate themselves (bearer header, or ?access_token= for browsers).
_STREAM_ERRORS = {
    401: "Missing, invalid, expired or revoked token (header or access_token query)",
    403: "This Origin may not connect, or a requested topic is not allowed",
    429: "Too many connections of this user on this instance",
    503: "Shutting down, or too many connections on this instance (Retry-After)",
}


@routes.get("/v1/ws", timeout=False, auth=False, rate_limit="none", self_authenticated=True,
            extra_responses={101: "Switching to the WebSocket protocol",
                             400: "Not a WebSocket upgrade request", **_STREAM_ERRORS})
async def websocket(request: web.Request) -> web.StreamResponse:
    """WebSocket upgrade: every realtime event (see docs/websocket.md)."""
    return await _kernel(request).ws.serve_ws(request)


@routes.get("/v1/events", timeout=False, auth=False, rate_limit="none",
            self_authenticated=True,
            extra_responses=_STREAM_ERRORS)
async def events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events fallback: the same events as the WebSocket.

    ``?topic=`` (repeatable) adds topics, each authorized like a WebSocket `subscribe`.
    """
    topics = [t for t in request.query.getall("topic", []) if t]
    return await _kernel(request).ws.serve_sse(request, topics[:50])


@hookimpl(trylast=True)
def sc_routes(kernel: Kernel) -> list[Route]:
    return list(routes)


async def _gateway(kernel: Kernel) -> AsyncIterator[None]:
    await kernel.ws.start()
    try:
        yield
    finally:
        await kernel.ws.close()


@hookimpl(trylast=True)
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_gateway]
