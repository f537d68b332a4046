"""A stand-in for the user directory while it is not on ``main``: ``GET /v1/users?email=``
and ``GET /v1/users/{id}`` exactly as API.md states them (exact normalised email, 0 or
1 results, public profile without the email). Used by the browser tests only when no
installed plugin serves ``GET /v1/users``; the real directory replaces it unchanged."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from secureconnect import RouteTable, hookimpl
from secureconnect.errors import NotFound
from secureconnect.http.handlers import json_response

routes = RouteTable(tag="users")


def _kernel(request: web.Request) -> Any:
    from secureconnect.app import KERNEL

    return request.app[KERNEL]


def _profile(user: Any) -> dict[str, Any]:
    return {"id": user.id, "display_name": user.display_name, "avatar_file_id": None,
            "presence": None}


@routes.get("/v1/users")
async def by_email(request: web.Request) -> web.StreamResponse:
    """Exact email look-up (stand-in)."""
    from secureconnect.auth import models as m

    kernel = _kernel(request)
    email = kernel.auth.normalise_email(request.query.get("email", ""))
    async with kernel.db.connect() as conn:
        row = (await conn.execute(select(m.users).where(m.users.c.email == email))).first()
    return json_response({"users": [_profile(row)] if row else []})


@routes.get("/v1/users/{user_id}")
async def by_id(request: web.Request) -> web.StreamResponse:
    """Public profile (stand-in)."""
    user = await _kernel(request).auth.get_user(request.match_info["user_id"])
    if user is None:
        raise NotFound("no such user", code="user_not_found")
    return json_response(_profile(user))


class DirectoryStandIn:
    PLUGIN_NAME = "directory_standin"

    @staticmethod
    @hookimpl
    def sc_routes(kernel: Any) -> list[Any]:
        return list(routes)
