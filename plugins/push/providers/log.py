"""The ``log`` provider (embedded default): records what would be sent, sends nothing.

Keeps the last ``keep`` deliveries in memory (ids and payload sizes only, never the
token) so an operator — or a test — can see that the pipeline works without a provider.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from .base import Delivery, Outcome, Sent

log = logging.getLogger(__name__)


class LogProvider:
    name = "log"

    def __init__(self, keep: int = 1000) -> None:
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep)

    async def send(self, delivery: Delivery) -> Outcome:
        record = {
            "outbox_id": delivery.outbox_id,
            "device_id": delivery.device_id,
            "platform": delivery.platform,
            "type": delivery.payload.get("type"),
            "collapse_key": delivery.collapse_key,
            "bytes": len(json.dumps(delivery.payload)),
        }
        self.recent.append(record)
        log.info("push (log provider): would send %s", record)
        return Sent()

    async def close(self) -> None:
        return None
