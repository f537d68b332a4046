"""The Content-Security-Policy of the web pages.

The API keeps the kernel's strict default (``default-src 'none'``). Pages get a policy
that allows scripts, styles, images and fonts from the same origin only — no
``'unsafe-inline'``, no ``'unsafe-eval'``, no nonces needed because pages carry no
inline code — and connections to the same origin over HTTP(S) and WebSocket, plus
the origins panels declare (``WebPanel.connect_src``, e.g. drive's S3 endpoint).
``frame-ancestors 'none'`` (with ``X-Frame-Options: DENY``) forbids framing.
"""

from __future__ import annotations

import re

from aiohttp import web

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")


def page_policy(request: web.Request, connect: tuple[str, ...] = ()) -> str:
    # 'self' covers same-origin WebSockets in CSP 3; the explicit source is for older
    # browsers, and only for a well-formed Host (it is the client's own header)
    host = request.host if _HOST.match(request.host or "") else ""
    ws = f"{'wss' if request.secure else 'ws'}://{host}" if host else ""
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        " ".join(("connect-src 'self'", ws, *connect)).rstrip(),
        "media-src 'self' blob:",
        "worker-src 'self'",
        "manifest-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ))


def page_headers(request: web.Request, connect: tuple[str, ...] = ()) -> dict[str, str]:
    """``connect``: further origins scripts may reach (panels' ``connect_src``)."""
    return {
        "Content-Security-Policy": page_policy(request, connect),
        "Cache-Control": "no-store",
    }
