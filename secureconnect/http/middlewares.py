"""The HTTP pipeline, outermost first (see docs/http.md):

1. ``request_id``  — accept a sane ``X-Request-ID`` or mint one; echo it back.
2. ``metrics``     — ``request_in_flight``, ``request_duration_seconds{method,path,status}``.
3. ``errors``      — every failure becomes problem+json; crashes become a 500 with the
                     request id and no internals.
4. ``cors``        — preflight answers and CORS headers from ``[cors]``.
5. ``body_limit``  — 413 when ``Content-Length`` exceeds the route's limit.
6. ``timeout``     — the route's timeout (default ``http.request_timeout``) → 504.
Security headers are added to every response, errors included, by an
``on_response_prepare`` signal. Authentication, rate limits and body validation run
in the per-route wrapper (:mod:`secureconnect.http.handlers`), after routing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ..errors import GatewayTimeout, PayloadTooLarge, Problem
from .context import REQUEST_ID, request_id_var
from .problem import from_http_exception, problem_response

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..routing import Route

log = logging.getLogger("secureconnect.http")
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def route_of(request: web.Request) -> Route | None:
    handler = getattr(request.match_info, "handler", None)
    return getattr(handler, "sc_route", None)


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/polls/{poll_id}``), never the raw path,
    so metric label cardinality stays bounded."""
    if request.match_info.http_exception is not None:
        return "unmatched"
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


def build_middlewares(kernel: Kernel) -> list[Any]:
    s = kernel.settings
    default_timeout = float(s.http.request_timeout)
    default_max_body = int(s.http.max_body_size)
    metrics = kernel.http_metrics
    cors_origins = set(s.cors.allow_origins)
    cors_any = "*" in cors_origins

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-ID", "")
        if not _SAFE_REQUEST_ID.match(rid):
            rid = uuid.uuid4().hex
        request[REQUEST_ID] = rid
        token = request_id_var.set(rid)
        try:
            return await handler(request)
        finally:
            request_id_var.reset(token)

    @web.middleware
    async def metrics_mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        metrics.in_flight.inc()
        start = time.perf_counter()
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            metrics.in_flight.dec()
            metrics.duration.labels(
                request.method, route_template(request), str(status)
            ).observe(time.perf_counter() - start)

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Problem as exc:
            return problem_response(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return problem_response(request, from_http_exception(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return problem_response(
                request,
                Problem("The server failed to handle the request; quote the request id "
                        "when reporting it."),
            )

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin is not None and (cors_any or origin in cors_origins)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                raise Problem("origin not allowed", code="cors_forbidden", status=403,
                              title="Forbidden")
            resp: web.StreamResponse = web.Response(status=204)
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE"
            resp.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Idempotency-Key, X-Request-ID"
            )
            resp.headers["Access-Control-Max-Age"] = str(int(s.cors.max_age))
        else:
            resp = await handler(request)
        if allowed and origin is not None and not resp.prepared:
            resp.headers["Access-Control-Allow-Origin"] = "*" if cors_any else origin
            resp.headers["Access-Control-Expose-Headers"] = "X-Request-ID, Retry-After"
            if not cors_any:
                resp.headers["Vary"] = "Origin"
            if s.cors.allow_credentials and not cors_any:
                resp.headers["Access-Control-Allow-Credentials"] = "true"
        return resp

    @web.middleware
    async def body_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        limit = route.max_body if route is not None and route.max_body else default_max_body
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of "
                                  f"{limit} bytes", limit=limit)
        return await handler(request)

    @web.middleware
    async def timeout(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        if route is not None and route.timeout is False:
            return await handler(request)
        limit = float(route.timeout) if route is not None and route.timeout else default_timeout
        start = time.perf_counter()
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await handler(request)
        except TimeoutError:
            # Only our own deadline is a 504; a TimeoutError a dependency raised with
            # time to spare propagates (a 500, or the dependency's own 503).
            if not deadline.expired():
                raise
            elapsed = time.perf_counter() - start
            metrics.timeouts.inc()
            metrics.timeout_duration.labels(request.method, route_template(request)).observe(
                elapsed
            )
            raise GatewayTimeout(
                f"the request did not complete within {limit:g} s", timeout=limit
            ) from None

    return [request_id, metrics_mw, errors, cors, body_limit, timeout]


def security_headers(kernel: Kernel) -> Any:
    s = kernel.settings.http

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        rid = request.get(REQUEST_ID)
        if rid:
            h.setdefault("X-Request-ID", rid)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("X-Frame-Options", "DENY")
        h.setdefault("Referrer-Policy", "no-referrer")
        h.setdefault("Content-Security-Policy", s.content_security_policy)
        h.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        behind_tls = s.behind_tls or request.secure
        if behind_tls:
            h.setdefault("Strict-Transport-Security", f"max-age={int(s.hsts_max_age)}")

    return on_prepare
