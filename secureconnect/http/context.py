"""Typed application and request keys, and the helpers a handler uses to reach them.

Low in the import graph on purpose (it imports only the kernel and routing types), so
plugins and kernel modules alike can say ``kernel_of(request)`` without importing the
application factory.
"""

from __future__ import annotations

import contextvars
from typing import Any

from aiohttp import web

from ..kernel import Kernel
from ..routing import Route

KERNEL = web.AppKey("secureconnect.kernel", Kernel)
ROUTES = web.AppKey("secureconnect.routes", list[Route])

REQUEST_ID = web.RequestKey("sc.request_id", str)
PRINCIPAL = web.RequestKey("sc.principal", Any)  # secureconnect.auth.service.Principal
ROUTE = web.RequestKey("sc.route", Route)

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "secureconnect_request_id", default=None
)


def principal(request: Any) -> Any:
    """The authenticated principal of a request (set for routes with ``auth=True``)."""
    return request[PRINCIPAL]


def kernel_of(request: web.Request) -> Kernel:
    """The :class:`~secureconnect.kernel.Kernel` of the application serving ``request``."""
    return request.app[KERNEL]


def user_id_of(request: web.Request) -> str:
    """The authenticated user's id (routes with ``auth=True``)."""
    return str(principal(request).user_id)
