"""ICE servers for a client: STUN URLs plus TURN with short-lived REST credentials.

The TURN REST API scheme (draft-uberti-behave-turn-rest-00, coturn ``use-auth-secret``
with ``static-auth-secret``): ``username = "<unix expiry>:<user_id>"`` and
``credential = base64(HMAC-SHA1(secret, username))``. The TURN server recomputes the
HMAC with the same shared secret and refuses the username once its expiry passed. The
secret never leaves this module and is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from .settings import VideoSettings


def turn_credentials(secret: str, user_id: str, ttl: int, now: float | None = None
                     ) -> tuple[str, str]:
    """``(username, credential)`` valid for ``ttl`` seconds from ``now``."""
    expiry = int(now if now is not None else time.time()) + int(ttl)
    username = f"{expiry}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def ice_servers(settings: VideoSettings, user_id: str, now: float | None = None
                ) -> dict[str, Any]:
    """The answer of ``GET /v1/calls/ice-servers`` in the ``RTCIceServer`` shape."""
    servers: list[dict[str, Any]] = []
    if settings.stun_urls:
        servers.append({"urls": list(settings.stun_urls)})
    if settings.turn_urls and settings.turn_secret:
        username, credential = turn_credentials(
            settings.turn_secret, user_id, settings.turn_ttl, now
        )
        servers.append(
            {"urls": list(settings.turn_urls), "username": username, "credential": credential}
        )
    return {"ice_servers": servers, "ttl": settings.turn_ttl}
