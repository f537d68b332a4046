"""Typed request keys and the request-id context variable (used by logging)."""

from __future__ import annotations

import contextvars
from typing import Any

from aiohttp import web

from ..routing import Route

REQUEST_ID = web.RequestKey("sc.request_id", str)
PRINCIPAL = web.RequestKey("sc.principal", Any)  # secureconnect.auth.service.Principal
ROUTE = web.RequestKey("sc.route", Route)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "secureconnect_request_id", default=None
)


def principal(request: Any) -> Any:
    """The authenticated principal of a request (set for routes with ``auth=True``)."""
    return request[PRINCIPAL]
