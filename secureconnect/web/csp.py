"""The Content-Security-Policy of the web pages.

The API keeps the kernel's strict default (``default-src 'none'``). Pages get a policy
that allows scripts, styles, images and fonts from the same origin only — no
``'unsafe-inline'``, no ``'unsafe-eval'``, no nonces needed because pages carry no
inline code — and connections to the same origin over HTTP(S) and WebSocket.
``frame-ancestors 'none'`` (with ``X-Frame-Options: DENY``) forbids framing.
"""

from __future__ import annotations

from aiohttp import web


def page_policy(request: web.Request) -> str:
    host = request.host
    ws = "wss" if request.secure else "ws"
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self'",
        f"connect-src 'self' {ws}://{host}",
        "media-src 'self' blob:",
        "worker-src 'self'",
        "manifest-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ))


def page_headers(request: web.Request) -> dict[str, str]:
    return {
        "Content-Security-Policy": page_policy(request),
        "Cache-Control": "no-store",
    }
