"""The gateway's metrics: every ``websocket_*`` series is registered here.

Owns the metric names (see ``/work/shared/reference/``) and the per-type children of
``websocket_messages_total``, cached so the fast path pays one dict look-up per count.
Guarantees bounded label sets: outbound types are the events the server encodes,
inbound types are the handler table's plus ``unknown`` and ``invalid``.
Called by every other gateway module through ``Gateway.metrics``.
"""

from __future__ import annotations

from typing import Any

from .frames import event_type_of


class GatewayMetrics:
    def __init__(self, registry: Any) -> None:
        m = registry
        self.connections = m.gauge(
            "websocket_connections", "Open WebSocket/SSE connections", ("transport",)
        )
        self.messages = m.counter(
            "websocket_messages_total", "WebSocket frames", ("direction", "type")
        )
        self.errors = m.counter(
            "websocket_errors_total", "WebSocket error frames and closes", ("code",)
        )
        self.dropped = m.counter(
            "websocket_send_queue_dropped_total",
            "Events dropped because a connection could not keep up",
        )
        self.unauthorized = m.counter(
            "websocket_connection_unauthorized_total",
            "Connections refused for a missing/bad/revoked token",
        )
        self.refused = m.counter(
            "websocket_connections_refused_total",
            "Connections refused by a limit or the origin check",
            ("reason",),
        )
        self.publish_errors = m.counter(
            "websocket_publish_errors_total", "Publishes the bus failed (never raised)"
        )
        self._out_children: dict[str, Any] = {}
        self._in_children: dict[str, Any] = {}

    def outbound(self, frame: str, count: int = 1) -> None:
        """Count ``count`` sockets sent the encoded ``frame``."""
        # the type is the envelope's first key: no need to parse the frame again
        event_type = event_type_of(frame) or "unknown"
        child = self._out_children.get(event_type)
        if child is None:
            child = self._out_children[event_type] = self.messages.labels("out", event_type)
        child.inc(count)

    def inbound(self, label: str) -> None:
        """Count a client frame (``label``: a handled type or ``unknown``: bounded)."""
        child = self._in_children.get(label)
        if child is None:
            child = self._in_children[label] = self.messages.labels("in", label)
        child.inc()
