"""The web pages and their static files (see docs/web.md).

``/`` (the client), ``/verify-email`` and ``/reset-password`` (the links the server
mails) and ``/admin`` all serve one shell page; the shell's ES modules pick the view
from the path, so tokens stay in one page's memory. ``/docs`` is Swagger UI over
``/openapi.json``; ``/docs/websocket`` renders ``docs/websocket.md``. Static files come
from the package (``/static/web/``), from the Swagger UI package (``/static/swagger/``)
and from each plugin's panel folder (``/static/plugins/<panel>/``).
Every page carries the page CSP of :mod:`.csp`; the JSON it needs is in a
``<meta>`` tag, never in an inline script.
"""

from __future__ import annotations

import importlib.util
import json
import mimetypes
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import __version__
from ..errors import NotFound
from ..routing import RouteTable
from .csp import page_headers
from .markdown import render
from .panels import PanelRegistry, safe_file

routes = RouteTable(tag="web")

STATIC = Path(__file__).resolve().parents[1] / "static" / "web"
DOCS = Path(__file__).resolve().parents[2] / "docs"
PANELS_KEY = "web.panels"
# HTML pages: /openapi.json documents them as text/html
_PAGE = {"auth": False, "rate_limit": "none", "content_type": "text/html"}

mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("text/css", ".css")


def _kernel(request: web.Request) -> Any:
    from ..http.context import KERNEL

    return request.app[KERNEL]


def panels(request: web.Request) -> PanelRegistry:
    registry: PanelRegistry = _kernel(request).state[PANELS_KEY]
    return registry


def client_config(kernel: Any) -> dict[str, Any]:
    """What the shell's scripts need to know, read from ``[web]``."""
    s = kernel.settings.web
    return {
        "name": str(kernel.settings.app.name),
        "version": __version__,
        "heartbeat_interval": float(s.heartbeat_interval),
        "heartbeat_timeout": float(s.heartbeat_timeout),
        "reconnect_max_delay": float(s.reconnect_max_delay),
        "history_page": int(s.history_page),
    }


def _page(request: web.Request, template: str, page: str, **context: Any) -> web.Response:
    from ..app import render_template

    kernel = _kernel(request)
    # every panel loads on every page: the shell switches between the client and the
    # console in place (the session lives in the page's memory)
    shown = panels(request).for_page("app") + panels(request).for_page("admin")
    text = render_template(request.app, template, {
        "name": kernel.settings.app.name,
        "page": page,
        "config": json.dumps(client_config(kernel)),
        "scripts": [p.url(f) for p in shown for f in p.scripts],
        "styles": [p.url(f) for p in shown for f in p.styles],
        **context,
    })
    return web.Response(text=text, content_type="text/html",
                        headers=page_headers(request, panels(request).connect_src()))


@routes.get("/", **_PAGE)
async def client(request: web.Request) -> web.StreamResponse:
    """The web client."""
    return _page(request, "web/shell.html", "app")


@routes.get("/verify-email", **_PAGE)
async def verify_email_page(request: web.Request) -> web.StreamResponse:
    """The page the verification mail links to (`?token=`)."""
    return _page(request, "web/shell.html", "verify-email")


@routes.get("/reset-password", **_PAGE)
async def reset_password_page(request: web.Request) -> web.StreamResponse:
    """The page the password-reset mail links to (`?token=`)."""
    return _page(request, "web/shell.html", "reset-password")


@routes.get("/admin", **_PAGE)
async def admin_page(request: web.Request) -> web.StreamResponse:
    """The admin console (sign in as an admin; data comes from /v1/admin)."""
    return _page(request, "web/shell.html", "admin")


@routes.get("/docs", **_PAGE)
async def docs(request: web.Request) -> web.StreamResponse:
    """Browsable REST API documentation (Swagger UI over /openapi.json)."""
    from ..app import render_template

    text = render_template(request.app, "web/docs.html", {
        "name": _kernel(request).settings.app.name, "swagger": swagger_dir() is not None})
    return web.Response(text=text, content_type="text/html", headers=page_headers(request))


@routes.get("/docs/websocket", **_PAGE)
async def websocket_docs(request: web.Request) -> web.StreamResponse:
    """The WebSocket protocol (docs/websocket.md)."""
    from ..app import render_template

    source = DOCS / "websocket.md"
    body = (render(source.read_text(encoding="utf-8")) if source.is_file() else
            "<p>docs/websocket.md is not shipped with this installation.</p>")
    text = render_template(request.app, "web/markdown.html", {
        "name": _kernel(request).settings.app.name, "title": "WebSocket protocol",
        "body": body})
    return web.Response(text=text, content_type="text/html", headers=page_headers(request))


def _file_response(found: Path | None) -> web.StreamResponse:
    if found is None:
        raise NotFound("no such file")
    ctype = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    return web.FileResponse(found, headers={"Content-Type": ctype, "Cache-Control": "no-cache"})


@routes.get("/static/web/{path:.+}", **_PAGE)
async def shell_static(request: web.Request) -> web.StreamResponse:
    """The shell's scripts and styles."""
    return _file_response(safe_file(STATIC, request.match_info["path"]))


@routes.get("/static/plugins/{panel}/{path:.+}", **_PAGE)
async def panel_static(request: web.Request) -> web.StreamResponse:
    """A plugin panel's files."""
    return _file_response(panels(request).file(request.match_info["panel"],
                                               request.match_info["path"]))


@routes.get("/static/swagger/{path:.+}", **_PAGE)
async def swagger_static(request: web.Request) -> web.StreamResponse:
    """Swagger UI's files, from the installed `swagger-ui-py` package."""
    root = swagger_dir()
    return _file_response(None if root is None else safe_file(root, request.match_info["path"]))


def swagger_dir() -> Path | None:
    """Swagger UI 5's dist files as the ``swagger-ui-py`` package ships them (its
    ``static`` folder; Apache-2.0), or ``None`` when it is not installed. Only the
    files are used, not its framework handlers."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        return None
    static = Path(spec.origin).parent / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None
