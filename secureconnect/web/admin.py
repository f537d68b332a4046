"""The admin REST API under ``/v1/admin/`` (what the ``/admin`` console shows).

Contract: every route needs an access token whose role is ``admin`` (else 403
``admin_only``, before anything is read); every change and every read of sensitive
data (configuration, accounts, the audit trail) is audit-logged — one line on the
``secureconnect.audit`` logger with actor, action, target and request id, and the
newest entries kept in memory for ``GET /v1/admin/audit``. Accounts can be searched,
signed out everywhere, disabled / enabled, deleted and given a role; an administrator
cannot disable, delete or demote their own account (409 ``own_account``), so the
console cannot lock its last admin out by a slip.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, or_, select

from ..config import as_plain_dict, redact
from ..errors import Conflict, Forbidden, NotFound
from ..http.context import REQUEST_ID, principal
from ..http.handlers import json_response
from ..routing import RouteTable

routes = RouteTable(tag="admin")
audit_log = logging.getLogger("secureconnect.audit")

AUDIT_KEY = "web.audit"
AUDIT_KEEP = 500
_ADMIN = {"extra_responses": {403: "not an admin"}}

AdminHandler = Callable[..., Awaitable[web.StreamResponse]]


def _kernel(request: web.Request) -> Any:
    from ..http.context import KERNEL

    return request.app[KERNEL]


def audit_entries(kernel: Any) -> deque[dict[str, Any]]:
    entries: deque[dict[str, Any]] = kernel.state.setdefault(AUDIT_KEY, deque(maxlen=AUDIT_KEEP))
    return entries


def record(request: web.Request, action: str, target: str = "", **details: Any) -> None:
    """Write one audit entry for the current admin request."""
    who = principal(request)
    entry = {"at": time.time(), "actor": str(who.user_id), "action": action,
             "target": target, "request_id": request.get(REQUEST_ID, ""), **details}
    audit_entries(_kernel(request)).append(entry)
    audit_log.info("admin action %s target=%s actor=%s request_id=%s", action, target or "-",
                   entry["actor"], entry["request_id"])


def admin_only(action: str, *, audit: bool = True) -> Callable[[AdminHandler], AdminHandler]:
    """Refuse non-admins with 403, then audit the call by name. Every change and every
    read of sensitive data (configuration, accounts, the audit trail) is audited; the
    console's periodic status reads (``audit=False``) would only drown them."""

    def wrap(handler: AdminHandler) -> AdminHandler:
        async def checked(request: web.Request, *args: Any) -> web.StreamResponse:
            if not principal(request).is_admin:
                raise Forbidden("this route is for administrators", code="admin_only")
            if audit:
                target = "/".join(v for k, v in request.match_info.items() if k != "path")
                record(request, action, target)
            return await handler(request, *args)

        checked.__doc__ = handler.__doc__
        checked.__name__ = handler.__name__
        return checked

    return wrap


# -- plugins, health, metrics, configuration -----------------------------------------

@routes.get("/v1/admin/plugins", **_ADMIN)
@admin_only("plugins.list", audit=False)
async def plugins(request: web.Request) -> web.StreamResponse:
    """Every installed plugin: enabled, version, the hooks it implements, its panels."""
    from ..plugins import describe_plugins
    from .pages import panels

    kernel = _kernel(request)
    by_owner: dict[str, list[str]] = {}
    for panel in panels(request).panels.values():
        by_owner.setdefault(panel.owner, []).append(panel.name)
    out = [{**info.as_dict(), "panels": by_owner.get(info.name, [])}
           for info in describe_plugins(kernel.pm, kernel.settings)]
    return json_response({"plugins": out})


@routes.get("/v1/admin/health", **_ADMIN)
@admin_only("health.read", audit=False)
async def health(request: web.Request) -> web.StreamResponse:
    """Every dependency check, as /health/ready runs them."""
    ok, checks = await _kernel(request).health.run()
    return json_response({"ready": ok, "checks": checks})


def _sum(kernel: Any, name: str, where: Callable[[dict[str, str]], bool] = lambda _: True
         ) -> float:
    total = 0.0
    for metric in kernel.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == name and where(sample.labels):
                total += float(sample.value)
    return total


def latency_buckets(kernel: Any, skip_paths: set[str]) -> dict[str, float]:
    """``request_duration_seconds`` buckets (cumulative counts by ``le``) summed over
    every route except long-lived ones (WebSocket, event streams), whose "duration" is
    a connection's lifetime. Two samples give the p99 of the requests in between."""
    out: dict[str, float] = {}
    for metric in kernel.metrics.registry.collect():
        for sample in metric.samples:
            if (sample.name == "request_duration_seconds_bucket"
                    and sample.labels.get("path") not in skip_paths):
                le = sample.labels["le"]
                out[le] = out.get(le, 0.0) + float(sample.value)
    return out


def key_metrics(kernel: Any) -> dict[str, float]:
    """Totals since start: the console samples them to draw rates."""
    return {
        "requests_total": _sum(kernel, "request_duration_seconds_count"),
        "request_errors_total": _sum(kernel, "request_duration_seconds_count",
                                     lambda lb: lb.get("status", "").startswith("5")),
        "requests_in_flight": _sum(kernel, "request_in_flight"),
        "websocket_connections": _sum(kernel, "websocket_connections"),
        "websocket_messages_out_total": _sum(kernel, "websocket_messages_total",
                                             lambda lb: lb.get("direction") == "out"),
        "plugin_hook_errors_total": _sum(kernel, "plugin_hook_errors_total"),
        "job_failures_total": _sum(kernel, "job_runs_total",
                                   lambda lb: lb.get("status") != "success"),
    }


@routes.get("/v1/admin/metrics", **_ADMIN)
@admin_only("metrics.read", audit=False)
async def metrics(request: web.Request) -> web.StreamResponse:
    """Key counters and gauges of this instance, and request latency buckets (full
    set: /metrics)."""
    from ..http.context import ROUTES

    streams = {r.path for r in request.app[ROUTES] if r.timeout is False}
    kernel = _kernel(request)
    return json_response({"at": time.time(), "metrics": key_metrics(kernel),
                          "latency_buckets": latency_buckets(kernel, streams)})


@routes.get("/v1/admin/config", **_ADMIN)
@admin_only("config.read")
async def config(request: web.Request) -> web.StreamResponse:
    """The effective configuration; secret-looking values are redacted."""
    return json_response({"settings": redact(as_plain_dict(_kernel(request).settings))})


# -- users ---------------------------------------------------------------------------

class UserQuery(BaseModel):
    #: prefix of the email or display name (case-insensitive); empty lists the newest
    q: str = Field(default="", max_length=200)
    limit: int = Field(default=50, ge=1, le=200)


class AdminUserOut(BaseModel):
    id: str
    email: str
    display_name: str
    role: str
    email_verified: bool
    created_at: str
    disabled: bool


class RoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "admin"]


def _admin_user(u: Any) -> dict[str, Any]:
    return AdminUserOut(id=u.id, email=u.email, display_name=u.display_name, role=u.role,
                        email_verified=u.email_verified_at is not None,
                        created_at=u.created_at.isoformat(),
                        disabled=u.disabled_at is not None).model_dump()


def _not_self(request: web.Request, user_id: str) -> None:
    if str(principal(request).user_id) == user_id:
        raise Conflict("administrators cannot disable, delete or demote their own account; "
                       "ask another administrator", code="own_account")


@routes.get("/v1/admin/users", query=UserQuery, **_ADMIN)
@admin_only("users.search")
async def users(request: web.Request, query: UserQuery) -> web.StreamResponse:
    """Search accounts by email or display-name prefix, newest first."""
    from ..auth import models as m

    kernel = _kernel(request)
    stmt = select(m.users).order_by(m.users.c.created_at.desc()).limit(query.limit)
    if query.q:
        prefix = query.q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(or_(m.users.c.email.like(f"{prefix}%", escape="\\"),
                              func.lower(m.users.c.display_name).like(f"{prefix}%",
                                                                      escape="\\")))
    async with kernel.db.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return json_response({"users": [_admin_user(r) for r in rows]})


@routes.post("/v1/admin/users/{user_id}/sign-out", **_ADMIN)
@admin_only("users.sign_out")
async def sign_out_everywhere(request: web.Request) -> web.StreamResponse:
    """End every session of the account at once (its sockets close too)."""
    kernel = _kernel(request)
    user_id = request.match_info["user_id"]
    if await kernel.auth.get_user(user_id) is None:
        raise NotFound("no such user", code="user_not_found")
    revoked = await kernel.auth.revoke_all_sessions(user_id, reason="admin")
    return json_response({"sessions_revoked": len(revoked)})


@routes.post("/v1/admin/users/{user_id}/disable", response=AdminUserOut, **_ADMIN)
@admin_only("users.disable")
async def disable_user(request: web.Request) -> web.StreamResponse:
    """Disable an account: its sessions end at once and it cannot sign in."""
    user_id = request.match_info["user_id"]
    _not_self(request, user_id)
    return json_response(_admin_user(await _kernel(request).auth.set_disabled(user_id, True)))


@routes.post("/v1/admin/users/{user_id}/enable", response=AdminUserOut, **_ADMIN)
@admin_only("users.enable")
async def enable_user(request: web.Request) -> web.StreamResponse:
    """Enable a disabled account again."""
    user_id = request.match_info["user_id"]
    return json_response(_admin_user(await _kernel(request).auth.set_disabled(user_id, False)))


@routes.put("/v1/admin/users/{user_id}/role", body=RoleIn, response=AdminUserOut, **_ADMIN)
@admin_only("users.role")
async def set_role(request: web.Request, body: RoleIn) -> web.StreamResponse:
    """Make an account an administrator or a user (a demotion ends its sessions)."""
    user_id = request.match_info["user_id"]
    if body.role != "admin":
        _not_self(request, user_id)
    return json_response(_admin_user(await _kernel(request).auth.set_role(user_id, body.role)))


@routes.delete("/v1/admin/users/{user_id}", status=204, **_ADMIN)
@admin_only("users.delete")
async def delete_user(request: web.Request) -> web.StreamResponse:
    """Delete an account and (through the plugins) its per-user data."""
    user_id = request.match_info["user_id"]
    _not_self(request, user_id)
    await _kernel(request).auth.delete_user(user_id)
    return web.Response(status=204)


# -- jobs and audit ------------------------------------------------------------------

@routes.get("/v1/admin/jobs", **_ADMIN)
@admin_only("jobs.list", audit=False)
async def jobs(request: web.Request) -> web.StreamResponse:
    """Periodic jobs: owner, interval and the last run on this instance."""
    scheduler = _kernel(request).jobs
    return json_response({"jobs": [
        {"name": name, "plugin": scheduler.owners.get(name, ""), "interval": job.interval,
         "last_run": scheduler.last_runs.get(name)}
        for name, job in sorted(scheduler.jobs.items())]})


@routes.post("/v1/admin/jobs/{name}/run", **_ADMIN)
@admin_only("jobs.run")
async def run_job(request: web.Request) -> web.StreamResponse:
    """Run a job now on this instance and answer with its outcome."""
    scheduler = _kernel(request).jobs
    name = request.match_info["name"]
    if name not in scheduler.jobs:
        raise NotFound(f"no job named {name!r}", code="job_not_found")
    await scheduler.run(name)
    return json_response({"name": name, "last_run": scheduler.last_runs.get(name)})


@routes.get("/v1/admin/audit", **_ADMIN)
@admin_only("audit.read")
async def audit(request: web.Request) -> web.StreamResponse:
    """The newest admin actions on this instance, newest first."""
    return json_response({"entries": list(reversed(audit_entries(_kernel(request))))})
