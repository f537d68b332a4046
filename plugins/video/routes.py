"""REST handlers for calls (../shared/API.md "video"): parse → service → serialise."""

from __future__ import annotations

import uuid
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from secureconnect import kernel_of, user_id_of
from secureconnect.http.handlers import json_response
from secureconnect.routing import RouteTable

from .errors import CallNotFound
from .ice import ice_servers
from .service import CallService

routes = RouteTable(tag="video")

STATE_KEY = "video"


class InitiateCallIn(BaseModel):
    """Start a call in a conversation; every other participant's sockets ring."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["audio", "video"]


class ParticipantOut(BaseModel):
    user_id: str
    #: invited (ringing) | joined | left | declined | missed
    status: str
    joined_at: str | None
    left_at: str | None
    #: hangup | declined | disconnected | removed | ended | null
    left_reason: str | None
    #: false while a joined participant's sockets are all gone (reconnect grace)
    connected: bool
    audio: bool
    video: bool
    screen: bool
    hand: bool


class CallOut(BaseModel):
    id: str
    conversation_id: str
    conversation_type: Literal["direct", "group"]
    type: Literal["audio", "video"]
    status: Literal["ringing", "active", "ended"]
    end_reason: Literal["completed", "missed", "declined", "ended_by_host", "stale"] | None
    initiator_id: str
    created_at: str
    ring_expires_at: str
    answered_at: str | None
    ended_at: str | None
    participants: list[ParticipantOut]


class IceServerOut(BaseModel):
    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceServersOut(BaseModel):
    ice_servers: list[IceServerOut]
    #: seconds the TURN credentials stay valid
    ttl: int


def _service(request: web.Request) -> CallService:
    service: CallService = kernel_of(request).state[STATE_KEY].service
    return service


def _user_id(request: web.Request) -> str:
    return user_id_of(request)


def _uuid_param(request: web.Request, name: str) -> str:
    try:
        return str(uuid.UUID(request.match_info[name]))
    except ValueError:
        raise CallNotFound(f"no such {name.removesuffix('_id')}") from None


@routes.get("/v1/calls/ice-servers", response=IceServersOut)
async def get_ice_servers(request: web.Request) -> web.StreamResponse:
    """STUN and TURN servers with short-lived TURN credentials (TURN REST API scheme)."""
    service = _service(request)
    return json_response(ice_servers(service.settings, _user_id(request)))


@routes.post(
    "/v1/conversations/{conversation_id}/calls",
    body=InitiateCallIn,
    response=CallOut,
    status=201,
    extra_responses={403: "not a participant", 409: "a call is in progress (call_in_progress)"},
)
async def initiate_call(request: web.Request, body: InitiateCallIn) -> web.StreamResponse:
    """Start a call; it rings for the other participants until answered or timed out."""
    call = await _service(request).initiate(
        _user_id(request), _uuid_param(request, "conversation_id"), body.type)
    return json_response(call, status=201)


@routes.get(
    "/v1/conversations/{conversation_id}/calls/active",
    response=CallOut,
    extra_responses={403: "not a participant", 404: "no active call"},
)
async def active_call(request: web.Request) -> web.StreamResponse:
    """The conversation's ringing or active call."""
    call = await _service(request).active(
        _user_id(request), _uuid_param(request, "conversation_id"))
    return json_response(call)


@routes.get(
    "/v1/calls/{call_id}",
    response=CallOut,
    extra_responses={403: "not a participant", 404: "no such call"},
)
async def get_call(request: web.Request) -> web.StreamResponse:
    """A call with its participants and their media state."""
    return json_response(
        await _service(request).get(_user_id(request), _uuid_param(request, "call_id")))


@routes.post(
    "/v1/calls/{call_id}/join",
    response=CallOut,
    extra_responses={403: "not a participant", 404: "no such call",
                     409: "call ended (call_ended) or full (call_full)"},
)
async def join_call(request: web.Request) -> web.StreamResponse:
    """Join (answer) a call; joining again is harmless."""
    return json_response(
        await _service(request).join(_user_id(request), _uuid_param(request, "call_id")))


@routes.post(
    "/v1/calls/{call_id}/leave",
    response=CallOut,
    extra_responses={403: "not a participant", 404: "no such call"},
)
async def leave_call(request: web.Request) -> web.StreamResponse:
    """Leave a call (idempotent); a 1-1 call, or a group call's last participant, ends it."""
    return json_response(
        await _service(request).leave(_user_id(request), _uuid_param(request, "call_id")))


@routes.post(
    "/v1/calls/{call_id}/decline",
    response=CallOut,
    extra_responses={403: "not a participant", 404: "no such call"},
)
async def decline_call(request: web.Request) -> web.StreamResponse:
    """Decline a ringing call (idempotent); declining a 1-1 call ends it."""
    return json_response(
        await _service(request).decline(_user_id(request), _uuid_param(request, "call_id")))


@routes.post(
    "/v1/calls/{call_id}/end",
    response=CallOut,
    extra_responses={403: "not the caller or an admin (not_call_host)", 404: "no such call"},
)
async def end_call(request: web.Request) -> web.StreamResponse:
    """End the call for everyone (its initiator or a conversation admin; idempotent)."""
    return json_response(
        await _service(request).end(_user_id(request), _uuid_param(request, "call_id")))
