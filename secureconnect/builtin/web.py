"""Kernel plugin ``web``: the web client shell, the admin console and API docs.

Pages and static files: :mod:`secureconnect.web.pages`; the admin API:
:mod:`secureconnect.web.admin`. Features bring their own UI through ``sc_web_panels``;
this plugin only collects the panels (see docs/web.md). It can be disabled
(``web = false`` under ``[plugins]``) for an API-only deployment.
"""

from __future__ import annotations

from typing import Any

from dynaconf import Validator

from .. import hookimpl
from ..hooks import collect
from ..kernel import Kernel
from ..routing import Route
from ..web.admin import routes as admin_routes
from ..web.pages import PANELS_KEY
from ..web.pages import routes as page_routes
from ..web.panels import PanelRegistry


@hookimpl(trylast=True)
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("web.heartbeat_interval", is_type_of=(int, float), gte=1, lte=300),
        Validator("web.heartbeat_timeout", is_type_of=(int, float), gte=0.5, lte=300),
        Validator("web.reconnect_max_delay", is_type_of=(int, float), gte=1, lte=600),
        Validator("web.history_page", is_type_of=int, gte=1, lte=200),
        Validator("web.docs", is_type_of=bool),
        Validator("web.admin", is_type_of=bool),
    ]


@hookimpl(trylast=True)
def sc_routes(kernel: Kernel) -> list[Route]:
    # panels are collected here, once, while the app is built (registration time)
    kernel.state[PANELS_KEY] = PanelRegistry(collect(kernel, "sc_web_panels"))
    s = kernel.settings.web
    out = [r for r in page_routes
           if (s.docs or not r.path.startswith(("/docs", "/static/swagger")))
           and (s.admin or r.path != "/admin")]
    if s.admin:
        out += list(admin_routes)
    return out


@hookimpl(trylast=True)
def sc_ws_handlers(kernel: Kernel) -> dict[str, Any]:
    async def ping(conn: Any, data: dict[str, Any]) -> dict[str, Any]:
        # the client's heartbeat: an answer proves the socket still delivers
        return {"pong": True}

    return {"web.ping": ping}
