"""One access-log line per request (switch: ``logging.access_log``).

Logger ``secureconnect.access`` at INFO: method, the route's *template* (never the raw
path nor the query string, so no token or secret in a URL ever reaches a log), status,
duration, request id and the authenticated user's id. In ``logging.format = "json"``
each field is its own JSON key::

    {"msg": "GET /v1/users/{user_id} 200 3.1ms", "method": "GET",
     "path": "/v1/users/{user_id}", "status": 200, "duration_ms": 3.1,
     "user_id": "0190...", "request_id": "..."}
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .context import PRINCIPAL, REQUEST_ID

log = logging.getLogger("secureconnect.access")


def log_request(request: web.Request, path: str, status: int, seconds: float) -> None:
    """Write the line (call it while the request id is still the current one)."""
    if not log.isEnabledFor(logging.INFO):
        return
    principal: Any = request.get(PRINCIPAL)
    user_id = str(principal.user_id) if principal is not None else "-"
    duration_ms = round(seconds * 1000, 1)
    log.info("%s %s %d %.1fms user=%s", request.method, path, status, duration_ms, user_id,
             extra={"method": request.method, "path": path, "status": status,
                    "duration_ms": duration_ms, "user_id": user_id,
                    "request_id": request.get(REQUEST_ID, "-")})
