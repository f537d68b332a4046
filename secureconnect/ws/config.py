"""The gateway's settings (table ``[ws]``), read once at start-up.

Owns the defaults and the typed view of ``[ws]``; the validators live with the kernel
plugin (``secureconnect/builtin/ws.py``), which runs before this is read. Every other
gateway module reads its bounds from one :class:`GatewayConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
