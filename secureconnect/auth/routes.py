"""REST handlers of ``/v1/auth/*`` and ``GET /v1/users/me``: parse → service → serialise.
(Account deletion is ``DELETE /v1/users/me`` of the directory plugin and
``DELETE /v1/admin/users/{id}`` of the admin API, both on :mod:`.accounts`.)"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from ..http.context import principal
from ..http.handlers import json_bytes, json_response
from ..routing import RouteTable
from .accounts import user_version

if TYPE_CHECKING:
    from .service import AuthService, TokenPair, User

routes = RouteTable(tag="auth")

# Generous bounds on raw input; the service applies the configured policy with
# clear messages (password length, display name, email syntax).
_EMAIL = Field(min_length=1, max_length=320)
_SECRET = Field(min_length=1, max_length=4096)
_TOKEN = Field(min_length=1, max_length=512)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RegisterIn(_In):
    email: str = _EMAIL
    password: str = _SECRET
    display_name: str = Field(min_length=1, max_length=1000)


class LoginIn(_In):
    email: str = _EMAIL
    password: str = _SECRET


class RefreshIn(_In):
    refresh_token: str = _TOKEN


class TokenIn(_In):
    token: str = _TOKEN


class PasswordResetIn(_In):
    email: str = _EMAIL


class PasswordResetConfirmIn(_In):
    token: str = _TOKEN
    new_password: str = _SECRET


class UserOut(BaseModel):
    id: str
    email: str
    display_name: str
    role: str
    email_verified: bool
    email_verified_at: datetime | None
    created_at: datetime


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    #: seconds until the access token expires
    expires_in: int
    #: seconds until the session ends (refresh no longer possible)
    refresh_expires_in: int


def _auth(request: web.Request) -> AuthService:
    from ..http.context import KERNEL

    return request.app[KERNEL].auth


def _user(user: User) -> UserOut:
    return UserOut.model_validate(user.as_dict())


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        token_type=pair.token_type,
        expires_in=pair.expires_in,
        refresh_expires_in=pair.refresh_expires_in,
    )


_NO_STORE = {"Cache-Control": "no-store"}


@routes.post(
    "/v1/auth/register",
    auth=False,
    rate_limit="register",
    body=RegisterIn,
    response=UserOut,
    status=201,
    extra_responses={409: "email already registered", 422: "password/email/name rules"},
)
async def register(request: web.Request, body: RegisterIn) -> web.StreamResponse:
    """Create an account (a verification mail is sent)."""
    user = await _auth(request).register(body.email, body.password, body.display_name)
    return json_response(_user(user), status=201)


@routes.post(
    "/v1/auth/login",
    auth=False,
    rate_limit="login",
    body=LoginIn,
    response=TokenOut,
    extra_responses={401: "wrong email or password", 429: "too many attempts"},
)
async def login(request: web.Request, body: LoginIn) -> web.StreamResponse:
    """Exchange email and password for an access token and a refresh token."""
    pair = await _auth(request).login(body.email, body.password)
    return json_response(_tokens(pair), headers=_NO_STORE)


@routes.post(
    "/v1/auth/refresh",
    auth=False,
    rate_limit="refresh",
    body=RefreshIn,
    response=TokenOut,
    extra_responses={401: "invalid, revoked or reused token"},
)
async def refresh(request: web.Request, body: RefreshIn) -> web.StreamResponse:
    """Rotate the refresh token: a new pair; the presented token stops working."""
    pair = await _auth(request).refresh(body.refresh_token)
    return json_response(_tokens(pair), headers=_NO_STORE)


@routes.post("/v1/auth/logout", status=204)
async def logout(request: web.Request) -> web.StreamResponse:
    """Revoke the session of the access token (and the token itself) at once."""
    await _auth(request).logout(principal(request))
    return web.Response(status=204)


@routes.get("/v1/users/me", response=UserOut)
async def me(request: web.Request) -> web.StreamResponse:
    """The authenticated user."""
    # The token was checked (revocation included) before this handler runs; only the
    # answer comes from the read cache, moved by every change of the account's row.
    auth, who = _auth(request), principal(request)

    async def build() -> tuple[bytes, tuple[str]]:
        user = _user(await auth.me(who))
        return user.__pydantic_serializer__.to_json(user), (user_version(who.user_id),)

    return json_bytes(await auth.kernel.read_cache.fetch(("auth.me", str(who.user_id)), build))


@routes.post(
    "/v1/auth/verify-email",
    auth=False,
    rate_limit="verify_email",
    body=TokenIn,
    response=UserOut,
    extra_responses={400: "unknown, used or expired token"},
)
async def verify_email(request: web.Request, body: TokenIn) -> web.StreamResponse:
    """Confirm an email address with the mailed single-use token."""
    user = await _auth(request).verify_email(body.token)
    return json_response(_user(user))


@routes.post(
    "/v1/auth/password-reset",
    auth=False,
    rate_limit="password_reset",
    body=PasswordResetIn,
    status=202,
)
async def password_reset(request: web.Request, body: PasswordResetIn) -> web.StreamResponse:
    """Mail a reset link if the account exists; 202 whatever the email."""
    await _auth(request).request_password_reset(body.email)
    return json_response({"status": "accepted"}, status=202)


@routes.post(
    "/v1/auth/password-reset/confirm",
    auth=False,
    rate_limit="password_reset",
    body=PasswordResetConfirmIn,
    status=204,
    extra_responses={400: "unknown, used or expired token"},
)
async def password_reset_confirm(
    request: web.Request, body: PasswordResetConfirmIn
) -> web.StreamResponse:
    """Set a new password with the mailed token; every session of the account ends."""
    await _auth(request).confirm_password_reset(body.token, body.new_password)
    return web.Response(status=204)
