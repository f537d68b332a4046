"""What the web client and the admin console need from push (docs/web.md):

* ``GET /v1/push/webpush/vapid-public-key`` — the VAPID public key a browser subscribes
  with (404 ``webpush_not_configured`` while ``webpush`` is not among the providers);
* ``/v1/admin/push/dead-letters`` — list, retry and drop dead letters (admins only,
  audited like every admin route; the same operations as ``secureconnect push
  dead-letters``). Payloads and tokens are never shown.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, model_validator

from secureconnect.errors import NotFound
from secureconnect.http.handlers import json_response
from secureconnect.routing import RouteTable
from secureconnect.web.admin import admin_only

from .routes import _service

routes = RouteTable(tag="push")
_ADMIN: dict[str, Any] = {"extra_responses": {403: "not an admin"}, "tag": "admin"}


class VapidKeyOut(BaseModel):
    #: base64url, uncompressed P-256 point: `applicationServerKey` of `PushManager.subscribe`
    public_key: str


class DeadLetterOut(BaseModel):
    id: str
    user_id: str
    device_id: str
    provider: str
    priority: str
    attempts: int
    last_error: str | None
    failed_at: str | None


class DeadLettersOut(BaseModel):
    dead_letters: list[DeadLetterOut]


class DeadLetterQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=100, ge=1, le=1000)


class RetryIn(BaseModel):
    """`ids` to retry, or `all: true`."""

    model_config = ConfigDict(extra="forbid")

    ids: list[StrictStr] = Field(default_factory=list, max_length=1000)
    all: StrictBool = False

    @model_validator(mode="after")
    def _one(self) -> RetryIn:
        if bool(self.ids) == self.all:
            raise ValueError("give `ids` or `all: true`")
        return self


class RetryOut(BaseModel):
    retried: int


class WebPushNotConfigured(NotFound):
    code = "webpush_not_configured"


@routes.get("/v1/push/webpush/vapid-public-key", response=VapidKeyOut,
            extra_responses={404: "Web Push is not configured"})
async def vapid_public_key(request: web.Request) -> web.StreamResponse:
    """The server's VAPID public key, for `PushManager.subscribe`."""
    provider = _service(request).dispatcher.providers.get("webpush")
    key = getattr(provider, "public_key", None)
    if not key:
        raise WebPushNotConfigured("Web Push is not configured on this server "
                                   "(`push.providers` lacks \"webpush\")")
    return json_response({"public_key": key})


def _view(row: dict[str, Any]) -> dict[str, Any]:
    failed = row.get("failed_at")
    return {"id": row["id"], "user_id": row["user_id"], "device_id": row["device_id"],
            "provider": row["provider"], "priority": row["priority"],
            "attempts": int(row["attempts"]), "last_error": row.get("last_error"),
            "failed_at": failed.isoformat() if failed is not None else None}


@routes.get("/v1/admin/push/dead-letters", response=DeadLettersOut, query=DeadLetterQuery,
            **_ADMIN)
@admin_only("push.dead_letters.list")
async def dead_letters(request: web.Request, query: DeadLetterQuery) -> web.StreamResponse:
    """Notifications that ran out of attempts or age, newest first."""
    rows = await _service(request).outbox.dead_letters(query.limit)
    return json_response({"dead_letters": [_view(r) for r in rows]})


@routes.post("/v1/admin/push/dead-letters/retry", body=RetryIn, response=RetryOut, **_ADMIN)
@admin_only("push.dead_letters.retry")
async def retry(request: web.Request, body: RetryIn) -> web.StreamResponse:
    """Move dead letters back into the outbox with fresh attempts."""
    service = _service(request)
    moved = await service.outbox.retry_dead_letters(None if body.all else list(body.ids))
    if moved:
        service.dispatcher.wake()
    return json_response({"retried": moved})


@routes.delete("/v1/admin/push/dead-letters/{dead_letter_id}", status=204, **_ADMIN)
@admin_only("push.dead_letters.drop")
async def drop(request: web.Request) -> web.StreamResponse:
    """Delete one dead letter for good."""
    try:
        dead_id = str(uuid.UUID(request.match_info["dead_letter_id"]))
    except ValueError:
        raise NotFound("no such dead letter", code="dead_letter_not_found") from None
    if not await _service(request).outbox.drop_dead_letter(dead_id):
        raise NotFound("no such dead letter", code="dead_letter_not_found")
    return web.Response(status=204)
