"""REST handlers of the user directory (../shared/API.md "users"): parse → service → serialise."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from secureconnect.errors import ValidationFailed
from secureconnect.http.context import KERNEL, principal
from secureconnect.http.handlers import json_response
from secureconnect.routing import RouteTable

from .service import DirectoryService

routes = RouteTable(tag="users")

STATE_KEY = "directory"


class PresenceOut(BaseModel):
    online: bool


class ProfileOut(BaseModel):
    """A public profile: never the email."""

    id: str
    display_name: str
    avatar_file_id: str | None
    #: null unless the caller shares a conversation with the user
    presence: PresenceOut | None


class ProfileListOut(BaseModel):
    users: list[ProfileOut]
    #: `?q=` only: pass as `cursor` for the next page; null on the last page
    next_cursor: str | None = None


class LookupQuery(BaseModel):
    """Exactly one of `email` (exact, normalised address) and `q` (display-name prefix
    among the people who share a conversation with the caller)."""

    model_config = ConfigDict(extra="forbid")

    email: str | None = Field(default=None, min_length=1, max_length=320)
    q: str | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=600)

    @model_validator(mode="after")
    def _one_of(self) -> LookupQuery:
        if (self.email is None) == (self.q is None):
            raise ValueError("give exactly one of `email` and `q`")
        return self


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: StrictStr | None = Field(default=None, min_length=1, max_length=1000)
    #: a drive file id; null removes the avatar
    avatar_file_id: uuid.UUID | None = None


def _service(request: web.Request) -> DirectoryService:
    service: DirectoryService = request.app[KERNEL].state[STATE_KEY]
    return service


@routes.get("/v1/users", response=ProfileListOut, query=LookupQuery)
async def lookup(request: web.Request, query: LookupQuery) -> web.StreamResponse:
    """Find a user by exact email, or co-members by display-name prefix."""
    viewer = str(principal(request).user_id)
    service = _service(request)
    if query.email is not None:
        found = await service.by_email(viewer, query.email)
        return json_response({"users": [p.as_dict() for p in found], "next_cursor": None})
    assert query.q is not None
    found, cursor = await service.search(viewer, query.q, query.limit, query.cursor)
    return json_response({"users": [p.as_dict() for p in found], "next_cursor": cursor})


@routes.patch("/v1/users/me", body=ProfileIn, response=ProfileOut)
async def update_me(request: web.Request, body: ProfileIn) -> web.StreamResponse:
    """Change the caller's display name and/or avatar."""
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        raise ValidationFailed("give `display_name` and/or `avatar_file_id`",
                               code="validation_error")
    if "display_name" in fields and fields["display_name"] is None:
        raise ValidationFailed("display_name cannot be null", code="invalid_display_name")
    if fields.get("avatar_file_id") is not None:
        fields["avatar_file_id"] = str(fields["avatar_file_id"])
    profile = await _service(request).update_me(str(principal(request).user_id), fields)
    return json_response(profile.as_dict())


class DeleteMeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: StrictStr = Field(min_length=1, max_length=4096)


@routes.delete("/v1/users/me", body=DeleteMeIn, status=204,
               extra_responses={403: "wrong password"})
async def delete_me(request: web.Request, body: DeleteMeIn) -> web.StreamResponse:
    """Delete the caller's account (the password confirms it): sessions end at once,
    every plugin removes its data."""
    await request.app[KERNEL].auth.delete_own_account(principal(request), body.password)
    return web.Response(status=204)


@routes.get("/v1/users/{user_id}", response=ProfileOut)
async def profile(request: web.Request) -> web.StreamResponse:
    """A user's public profile (no email)."""
    found = await _service(request).profile(str(principal(request).user_id),
                                            request.match_info["user_id"])
    return json_response(found.as_dict())
