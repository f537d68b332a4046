"""Kernel plugin ``core``: health, metrics, OpenAPI and the kernel's HTTP settings."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from aiohttp import web
from dynaconf import Validator

from .. import __version__, hookimpl
from ..errors import Problem, Unauthorized
from ..http.handlers import bearer_token, json_response
from ..kernel import Kernel
from ..openapi import build_openapi
from ..routing import Route, RouteTable

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
log = logging.getLogger("secureconnect.core")


@hookimpl(trylast=True)
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("app.name", is_type_of=str, len_min=1),
        Validator("app.public_url", is_type_of=str, len_min=1),
        Validator("app.data_dir", is_type_of=str, len_min=1),
        Validator("server.host", is_type_of=str, len_min=1),
        Validator("server.port", is_type_of=int, gte=0, lte=65535),
        Validator("server.shutdown_timeout", is_type_of=(int, float), gte=0, lte=300),
        Validator("server.backlog", is_type_of=int, gte=16, lte=65535),
        Validator("server.uvloop", is_type_of=bool),
        Validator("http.request_timeout", is_type_of=(int, float), gt=0, lte=3600),
        Validator("http.max_body_size", is_type_of=int, gte=1024, lte=1 << 30),
        Validator("http.max_json_depth", is_type_of=int, gte=2, lte=512),
        Validator("http.behind_tls", is_type_of=bool),
        Validator("http.hsts_max_age", is_type_of=int, gte=0),
        Validator("http.content_security_policy", is_type_of=str, len_min=1),
        Validator("cors.allow_origins", is_type_of=list),
        Validator("cors.allow_credentials", is_type_of=bool),
        Validator("cors.max_age", is_type_of=int, gte=0, lte=86400),
        Validator("health.check_timeout", is_type_of=(int, float), gt=0, lte=30),
        Validator("metrics.enabled", is_type_of=bool),
        Validator("metrics.token", is_type_of=str),
        Validator("metrics.require_token", is_type_of=bool),
        Validator("status.details", is_type_of=bool),
        Validator("logging.level", is_in=_LOG_LEVELS),
        Validator("logging.format", is_in=("text", "json")),
        Validator("logging.trace_plugins", is_type_of=bool),
        Validator("logging.access_log", is_type_of=bool),
        Validator("plugins", is_type_of=dict),
    ]


routes = RouteTable(tag="kernel")


def _kernel(request: web.Request) -> Kernel:
    from ..http.context import KERNEL

    return request.app[KERNEL]


@routes.get("/health/live", auth=False, rate_limit="none")
async def live(request: web.Request) -> web.StreamResponse:
    """Liveness: 200 while the process serves (no I/O)."""
    return json_response({"status": "ok"})


@routes.get("/health/ready", auth=False, rate_limit="none",
            extra_responses={503: "a dependency is unavailable"})
async def ready(request: web.Request) -> web.StreamResponse:
    """Readiness: every registered dependency check, each with its own timeout; 200
    (`ok`, or `degraded` when a dependency the service works without failed) or 503."""
    health = _kernel(request).health
    ok, checks = await health.run()
    if ok:
        return json_response({"status": health.overall(ok, checks), "checks": checks})
    failed = sorted(name for name, r in checks.items() if r["status"] == "failed")
    raise Problem(f"not ready: {', '.join(failed)} unavailable", code="not_ready",
                  status=503, title="Service Unavailable", failed=failed, checks=checks)


@routes.get("/metrics", auth=False, rate_limit="none", content_type="text/plain",
            extra_responses={401: "metrics.token is set and was not sent"})
async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus metrics in text format (optionally behind `metrics.token`)."""
    kernel = _kernel(request)
    token = kernel.settings.metrics.token
    if token and not hmac.compare_digest(bearer_token(request) or "", token):
        raise Unauthorized("the metrics endpoint needs the configured bearer token")
    resp = web.Response(body=kernel.metrics.render())
    resp.content_type = "text/plain"
    resp.charset = "utf-8"
    resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return resp


@routes.get("/openapi.json", auth=False, rate_limit="none")
async def openapi(request: web.Request) -> web.StreamResponse:
    """The REST API description (OpenAPI 3.1), generated from the registered routes."""
    from ..http.context import ROUTES

    kernel = _kernel(request)
    cached: Any = kernel.state.get("core.openapi")
    if cached is None:
        mounted: list[Route] = request.app[ROUTES]
        spec = build_openapi(mounted, title=kernel.settings.app.name,
                             version=__version__)
        cached = kernel.state["core.openapi"] = json.dumps(spec)
    return web.Response(text=cached, content_type="application/json")


@routes.get("/status", auth=False, content_type="text/html")
async def status(request: web.Request) -> web.StreamResponse:
    """A human-readable status page: readiness, and with `status.details` the
    version and plugins (names only)."""
    from ..app import render_template
    from ..plugins import describe_plugins

    kernel = _kernel(request)
    ok, checks = await kernel.health.run()
    details = bool(kernel.settings.status.details)
    html = render_template(request.app, "status.html", {
        "name": kernel.settings.app.name, "version": __version__ if details else None,
        "ready": ok, "checks": checks,
        "plugins": describe_plugins(kernel.pm, kernel.settings) if details else None})
    return web.Response(text=html, content_type="text/html", status=200 if ok else 503)


@hookimpl(trylast=True)
def sc_routes(kernel: Kernel) -> list[Route]:
    m = kernel.settings.metrics
    enabled = bool(m.enabled)
    if enabled and m.require_token and not m.token:
        log.warning("/metrics is not served: metrics.require_token is set and "
                    "metrics.token is empty (set it as a secret, or require_token = false)")
        enabled = False
    return [r for r in routes if enabled or r.path != "/metrics"]
