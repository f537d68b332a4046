"""REST handlers for push (../shared/API.md "push" and the chat mute route):
parse → service → serialise."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictStr

from secureconnect.http.context import principal
from secureconnect.http.handlers import json_response
from secureconnect.routing import RouteTable

from .service import DeviceNotFound, NewDevice, PushService

routes = RouteTable(tag="push")

STATE_KEY = "push"


class DeviceIn(BaseModel):
    """A device to notify. `token`: the provider token; webpush: the PushSubscription
    JSON (object or text); webhook: the gateway URL (SSRF-checked, else 422)."""

    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns", "webpush", "webhook"]
    token: StrictStr | dict[str, Any]
    app_id: StrictStr | None = Field(default=None, max_length=255)
    locale: StrictStr | None = Field(default=None, max_length=35)


class DeviceOut(BaseModel):
    id: str
    platform: str
    app_id: str | None
    locale: str | None
    created_at: str
    updated_at: str


class DevicesOut(BaseModel):
    devices: list[DeviceOut]


class TestOut(BaseModel):
    #: notifications queued, one per device
    queued: int


class MuteIn(BaseModel):
    """`muted_until` in the future mutes pushes of the conversation until then;
    null (or absent, or past) unmutes."""

    model_config = ConfigDict(extra="forbid")

    muted_until: AwareDatetime | None = None


class MuteOut(BaseModel):
    conversation_id: str
    muted_until: str | None


def _service(request: web.Request) -> PushService:
    from secureconnect.app import KERNEL

    service: PushService = request.app[KERNEL].state[STATE_KEY]
    return service


def _uuid_param(request: web.Request, name: str, missing: type[Exception]) -> str:
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError:
        raise missing(f"no such {name.removesuffix('_id')}") from None


@routes.post("/v1/push/devices", body=DeviceIn, response=DeviceOut, status=201,
             extra_responses={422: "invalid token or URL not allowed"})
async def register_device(request: web.Request, body: DeviceIn) -> web.StreamResponse:
    """Register a device; the same token registered again moves to the caller."""
    who = principal(request)
    device = await _service(request).register(
        str(who.user_id), str(who.session_id),
        NewDevice(body.platform, body.token, body.app_id, body.locale))
    return json_response(device, status=201)


@routes.get("/v1/push/devices", response=DevicesOut)
async def list_devices(request: web.Request) -> web.StreamResponse:
    """The caller's devices (tokens are never shown)."""
    found = await _service(request).devices_of(str(principal(request).user_id))
    return json_response({"devices": found})


@routes.delete("/v1/push/devices/{device_id}", status=204,
               extra_responses={404: "no such device of the caller"})
async def delete_device(request: web.Request) -> web.StreamResponse:
    """Remove one of the caller's devices."""
    device_id = _uuid_param(request, "device_id", DeviceNotFound)
    await _service(request).remove(str(principal(request).user_id), device_id)
    return web.Response(status=204)


@routes.post("/v1/push/test", response=TestOut, status=202)
async def send_test(request: web.Request) -> web.StreamResponse:
    """Queue a test notification to each of the caller's devices."""
    queued = await _service(request).send_test(str(principal(request).user_id))
    return json_response({"queued": queued}, status=202)


@routes.put("/v1/conversations/{conversation_id}/notifications", body=MuteIn,
            response=MuteOut, tag="push", extra_responses={403: "not a participant"})
async def set_mute(request: web.Request, body: MuteIn) -> web.StreamResponse:
    """Mute (or unmute) pushes of one conversation for the caller."""
    from secureconnect_plugins.chat.api import NotAParticipant

    conversation_id = _uuid_param(request, "conversation_id", NotAParticipant)
    result = await _service(request).set_mute(
        str(principal(request).user_id), conversation_id, body.muted_until)
    return json_response(result)
