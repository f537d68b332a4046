"""REST handlers of the user directory: ``GET /v1/users/{id}``, ``GET /v1/users``
(``?email=`` or ``?q=``) and ``PATCH /v1/users/me``. Parse → :mod:`.directory` →
serialise."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ValidationFailed
from ..http.context import kernel_of, principal
from ..http.handlers import json_response
from ..routing import RouteTable
from .directory import UNCHANGED, Directory, Profile, ProfilePage

routes = RouteTable(tag="users")

#: rate-limit class of lookups by email (``[rate_limits.classes.user_lookup]``)
LOOKUP_CLASS = "user_lookup"
DEFAULT_PAGE = 20
MAX_PAGE = 100


class PresenceOut(BaseModel):
    online: bool
    #: RFC 3339, when the user was last connected (``null`` while online or unknown)
    last_seen_at: str | None = None


class ProfileOut(BaseModel):
    id: str
    display_name: str
    avatar_file_id: str | None
    #: ``null`` when no plugin keeps presence (or for lookups and searches)
    presence: PresenceOut | None


class ProfilesOut(BaseModel):
    users: list[ProfileOut]
    #: pass as ``cursor`` for the next page of a name search (``null``: no more)
    next_cursor: str | None = None


class UsersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: exact address (normalised: case, IDNA) → 0 or 1 user
    email: str | None = Field(default=None, min_length=1, max_length=320)
    #: display-name prefix among the people who share a conversation with you
    q: str | None = Field(default=None, min_length=1, max_length=200)
    limit: int = Field(default=DEFAULT_PAGE, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(default=None, max_length=1000)


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, min_length=1, max_length=1000)
    #: a drive file id; ``null`` removes the picture
    avatar_file_id: str | None = Field(default=None, max_length=64)


def _directory(request: web.Request) -> Directory:
    return Directory(kernel_of(request))


def _out(profile: Profile) -> dict[str, Any]:
    return ProfileOut.model_validate(profile.as_dict()).model_dump(mode="json")


def _page(page: ProfilePage) -> dict[str, Any]:
    return {"users": [_out(p) for p in page.users], "next_cursor": page.next_cursor}


@routes.get("/v1/users", query=UsersQuery, response=ProfilesOut,
            extra_responses={422: "neither or both of email and q; invalid email or cursor",
                             429: "too many lookups by email"})
async def find_users(request: web.Request, query: UsersQuery) -> web.StreamResponse:
    """Find users: by exact email address, or by display-name prefix among contacts."""
    if (query.email is None) == (query.q is None):
        raise ValidationFailed("give exactly one of `email` and `q`", code="invalid_query",
                               status=422)
    directory = _directory(request)
    if query.email is not None:
        await directory.kernel.rate_limits.check_request(request, LOOKUP_CLASS,
                                                         principal(request))
        found = await directory.find_by_email(query.email)
        return json_response({"users": [_out(p) for p in found], "next_cursor": None})
    assert query.q is not None
    page = await directory.search(str(principal(request).user_id), query.q,
                                  limit=query.limit, cursor=query.cursor)
    return json_response(_page(page))


@routes.get("/v1/users/{user_id}", response=ProfileOut,
            extra_responses={404: "no such user"})
async def user_profile(request: web.Request) -> web.StreamResponse:
    """A user's public profile (never the email)."""
    profile = await _directory(request).profile(request.match_info["user_id"])
    return json_response(_out(profile))


@routes.patch("/v1/users/me", body=ProfileIn, response=ProfileOut,
              extra_responses={422: "display name or file id rules"})
async def update_me(request: web.Request, body: ProfileIn) -> web.StreamResponse:
    """Change your display name and/or picture (``avatar_file_id: null`` removes it)."""
    avatar = body.avatar_file_id if "avatar_file_id" in body.model_fields_set else UNCHANGED
    profile = await _directory(request).update_profile(
        principal(request), display_name=body.display_name, avatar_file_id=avatar)
    return json_response(_out(profile))
