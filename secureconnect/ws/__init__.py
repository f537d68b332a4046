"""The WebSocket gateway: one socket per client carries every realtime feature.

``kernel.ws`` is a :class:`Gateway`; :mod:`secureconnect.ws.gateway` documents the
interfaces other parts use and maps the package's modules. Import the public names
from here or from ``secureconnect.ws.gateway`` (both stay stable).
"""

from .gateway import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    CONTROL_TOPIC,
    USER_TOPIC_PREFIX,
    Connection,
    Deadlines,
    Deferred,
    Gateway,
    GatewayConfig,
    SseConnection,
    WsConnection,
    WsHandler,
    encode,
    text_frame,
)

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
