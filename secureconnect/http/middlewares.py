"""The HTTP pipeline, outermost first (see docs/http.md):

1. ``request_id``  — accept a sane ``X-Request-ID`` or mint one; echo it back.
2. ``metrics``     — ``request_in_flight``, ``request_duration_seconds{method,path,status}``.
3. ``errors``      — every failure becomes problem+json; crashes become a 500 with the
                     request id and no internals.
4. ``cors``        — preflight answers from ``[cors]``.
5. ``body_limit``  — 413 when ``Content-Length`` exceeds the route's limit.
6. ``timeout``     — the route's timeout (default ``http.request_timeout``) → 504.
Security headers, ``Server: SecureConnect`` (no versions) and the CORS response headers
(``Vary: Origin`` whenever an allow-list is set) are added to every response, errors
included, by an ``on_response_prepare`` signal. Authentication, rate limits and body validation run
in the per-route wrapper (:mod:`secureconnect.http.handlers`), after routing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from ..errors import GatewayTimeout, PayloadTooLarge, Problem
from .access_log import log_request
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
    access_log = bool(s.logging.access_log)

    durations: dict[tuple[str, str, int], Any] = {}
    # requests in flight: a plain count the gauge reads when scraped (no lock per request)
    in_flight = [0]
    metrics.in_flight.set_function(lambda: float(in_flight[0]))

    def observe(method: str, path: str, status: int, seconds: float) -> None:
        # cache label children: .labels() takes a lock and builds a tuple per call
        child = durations.get((method, path, status))
        if child is None:
            child = durations[(method, path, status)] = metrics.duration.labels(
                method, path, str(status))
        child.observe(seconds)

    # Layers 1-3 share one middleware (one frame per request instead of three).
    @web.middleware
    async def outer(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request.headers.get("X-Request-ID", "")
        if not _SAFE_REQUEST_ID.match(rid):
            rid = os.urandom(16).hex()
        request[REQUEST_ID] = rid
        token = request_id_var.set(rid)
        in_flight[0] += 1
        start = time.perf_counter()
        try:
            resp = await _errors(request, handler)
            seconds = time.perf_counter() - start
            path = route_template(request)
            if access_log:
                log_request(request, path, resp.status, seconds)
        finally:
            in_flight[0] -= 1
            request_id_var.reset(token)
        observe(request.method, path, resp.status, seconds)
        return resp

    async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        except ConnectionResetError:
            transport = request.transport
            if transport is not None and not transport.is_closing():
                log.exception("unhandled error in %s %s", request.method, request.path)
                return problem_response(request, Problem(
                    "The server failed to handle the request; quote the request id "
                    "when reporting it."))
            # the client went away mid-request (e.g. while its body was read): nothing
            # to answer and nothing wrong here — no traceback; counted as nginx's 499
            log.debug("client closed the connection during %s %s", request.method,
                      request.path)
            return problem_response(request, Problem(
                "the client closed the connection before the request was handled",
                code="client_closed_request", status=499, title="Client Closed Request"))
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
        # the CORS response headers are added by the on_response_prepare signal
        # (security_headers), so error responses made outside this layer carry them too
        return resp

    # Layers 5-6 share one middleware as well.
    @web.middleware
    async def inner(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        limit = route.max_body if route is not None and route.max_body else default_max_body
        length = request.content_length
        if length is not None and length > limit:
            raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of "
                                  f"{limit} bytes", limit=limit)
        if route is not None and route.timeout is False:
            return await handler(request)
        seconds = float(route.timeout) if route is not None and route.timeout else default_timeout
        start = time.perf_counter()
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await handler(request)
        except TimeoutError:
            # Only our own deadline is a 504; a TimeoutError a dependency raised with
            # time to spare propagates (a 500, or the dependency's own 503).
            if not deadline.expired():
                raise
            metrics.timeouts.inc()
            metrics.timeout_duration.labels(request.method, route_template(request)).observe(
                time.perf_counter() - start
            )
            raise GatewayTimeout(
                f"the request did not complete within {seconds:g} s", timeout=seconds
            ) from None

    # Without an allow-list there is nothing for CORS to answer: skip the layer.
    return [outer, cors, inner] if cors_origins else [outer, inner]


SERVER_HEADER = "SecureConnect"


def security_headers(kernel: Kernel) -> Any:
    s = kernel.settings.http
    cors_origins = set(kernel.settings.cors.allow_origins)
    cors_any = "*" in cors_origins
    cors_credentials = bool(kernel.settings.cors.allow_credentials) and not cors_any
    static = CIMultiDict({
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": s.content_security_policy,
        "Cross-Origin-Opener-Policy": "same-origin",
    })
    hsts = f"max-age={int(s.hsts_max_age)}"

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        h = response.headers
        # aiohttp has set "Python/3.x aiohttp/3.y" by now: no versions for scanners
        h["Server"] = "SecureConnect"
        rid = request.get(REQUEST_ID)
        if rid:
            h.setdefault("X-Request-ID", rid)
        # one extend on the hot path; handlers that set one of these keep theirs
        if any(k in h for k in static):
            for key, value in static.items():
                h.setdefault(key, value)
        else:
            h.extend(static)
        if s.behind_tls or request.secure:
            h.setdefault("Strict-Transport-Security", hsts)
        h["Server"] = SERVER_HEADER
        if cors_origins:
            _cors_headers(request, h)

    def _cors_headers(request: web.Request, h: Any) -> None:
        if not cors_any:
            # the answer depends on the Origin header: caches must key on it
            vary = h.get("Vary")
            if vary is None:
                h["Vary"] = "Origin"
            elif "origin" not in vary.lower():
                h["Vary"] = f"{vary}, Origin"
        origin = request.headers.get("Origin")
        if origin is None or not (cors_any or origin in cors_origins):
            return
        h.setdefault("Access-Control-Allow-Origin", "*" if cors_any else origin)
        h.setdefault("Access-Control-Expose-Headers", "X-Request-ID, Retry-After")
        if cors_credentials:
            h.setdefault("Access-Control-Allow-Credentials", "true")

    return on_prepare
