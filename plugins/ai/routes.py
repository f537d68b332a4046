"""REST handlers for AI (../shared/API.md "ai"): parse → service → serialise."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from secureconnect.errors import NotFound
from secureconnect.http.context import principal
from secureconnect.http.handlers import json_response
from secureconnect.routing import NO_TIMEOUT, RouteTable

from .service import AiService

routes = RouteTable(tag="ai")

STATE_KEY = "ai"
#: BCP 47-like language tag: "en", "de-CH", "pt-BR"
LANGUAGE = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$"


class FeaturesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: StrictBool | None = None
    smart_replies: StrictBool | None = None


class SettingsIn(BaseModel):
    """Fields left out keep their value; `language: null` clears it."""

    model_config = ConfigDict(extra="forbid")

    #: opt-in: AI features refuse with 403 ai_not_enabled until true
    enabled: StrictBool | None = None
    language: StrictStr | None = Field(default=None, pattern=LANGUAGE)
    features: FeaturesIn | None = None


class SettingsOut(BaseModel):
    enabled: bool
    language: str | None
    features: dict[str, bool]


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: StrictBool | None = None
    smart_replies: StrictBool | None = None


class PolicyOut(BaseModel):
    conversation_id: str
    summary: bool
    smart_replies: bool
    updated_by: str | None
    updated_at: str | None


class SummaryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: summarise messages with seq greater than this (default: the latest `limit`)
    since_seq: StrictInt | None = Field(default=None, ge=0)
    #: most messages read, newest first (default `ai.default_limit`, at most `ai.max_messages`)
    limit: StrictInt | None = Field(default=None, ge=1)


class Covered(BaseModel):
    from_seq: int | None
    to_seq: int | None
    since_seq: int | None
    #: false when older messages after since_seq were left out by `limit`
    complete: bool


class SummaryOut(BaseModel):
    summary: str
    #: readable messages the summary was made from
    messages_read: int
    #: end-to-end encrypted messages left out unread
    encrypted_skipped: int
    #: deleted messages and non-text types (files, system notices)
    other_skipped: int
    #: messages longer than `ai.max_message_chars`, cut to it
    truncated_messages: int
    provider: str
    model: str
    #: seq numbers of the messages the summary cites
    citations: list[int]
    covered: Covered
    #: chunks the conversation was split into to stay within the request budget
    chunks: int
    #: partial summaries cut to half the budget so that two fit one merge request
    partials_clipped: int


class SmartRepliesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: StrictInt = Field(default=3, ge=1, le=5)


class SmartRepliesOut(BaseModel):
    replies: list[str]
    #: seq of the latest incoming message the replies answer (null: none readable)
    based_on_seq: int | None
    encrypted_skipped: int
    provider: str
    model: str
    #: "latest_incoming_encrypted" when the message to answer could not be read
    reason: str | None = None


def _service(request: web.Request) -> AiService:
    from secureconnect.http.context import KERNEL

    service: AiService = request.app[KERNEL].state[STATE_KEY]
    return service


def _user_id(request: web.Request) -> str:
    return str(principal(request).user_id)


def _conversation_id(request: web.Request) -> str:
    try:
        return str(uuid.UUID(request.match_info["conversation_id"]))
    except ValueError:
        raise NotFound("no such conversation", code="conversation_not_found") from None


async def _optional_body(request: web.Request, model: type[BaseModel]) -> Any:
    from secureconnect.http.handlers import read_body

    if not request.can_read_body:
        return model()
    return await read_body(request, model)


FEATURE_ERRORS = {
    403: "ai_not_enabled, ai_feature_disabled, not_a_participant or "
         "ai_disabled_in_conversation",
    429: "quota_exceeded (daily) or rate_limited, with Retry-After",
    503: "ai_unavailable (provider down, breaker open) or ai_busy",
    504: "ai_timeout",
}


@routes.get("/v1/ai/settings", response=SettingsOut)
async def get_settings(request: web.Request) -> web.StreamResponse:
    """The caller's AI settings (opted out until `enabled` is set true)."""
    return json_response(await _service(request).get_settings(_user_id(request)))


@routes.put("/v1/ai/settings", body=SettingsIn, response=SettingsOut)
async def put_settings(request: web.Request, body: SettingsIn) -> web.StreamResponse:
    """Opt in or out, choose the answer language and switch single features."""
    features = body.features.model_dump(exclude_none=True) if body.features else None
    result = await _service(request).put_settings(
        _user_id(request), enabled=body.enabled, language=body.language, features=features,
        language_given="language" in body.model_fields_set)
    return json_response(result)


@routes.get("/v1/ai/conversations/{conversation_id}/policy", response=PolicyOut,
            extra_responses={403: "not a participant"})
async def get_policy(request: web.Request) -> web.StreamResponse:
    """Which AI features the conversation allows."""
    return json_response(await _service(request).get_policy(
        _user_id(request), _conversation_id(request)))


@routes.put("/v1/ai/conversations/{conversation_id}/policy", body=PolicyIn,
            response=PolicyOut,
            extra_responses={403: "not a participant or not_conversation_admin"})
async def put_policy(request: web.Request, body: PolicyIn) -> web.StreamResponse:
    """Switch AI features on or off for everyone in the conversation (owner and admins)."""
    return json_response(await _service(request).put_policy(
        _user_id(request), _conversation_id(request), body.model_dump(exclude_none=True)))


# The service bounds these requests itself (ai.request_timeout → 504 ai_timeout).
@routes.post("/v1/ai/conversations/{conversation_id}/summary", response=SummaryOut,
             rate_limit="ai", timeout=NO_TIMEOUT, extra_responses=FEATURE_ERRORS)
async def summary(request: web.Request) -> web.StreamResponse:
    """Summarise the conversation's readable messages (encrypted ones are never read)."""
    body: SummaryIn = await _optional_body(request, SummaryIn)
    result = await _service(request).summary(
        _user_id(request), _conversation_id(request), since_seq=body.since_seq,
        limit=body.limit)
    return json_response(result)


@routes.post("/v1/ai/conversations/{conversation_id}/smart-replies",
             response=SmartRepliesOut, rate_limit="ai", timeout=NO_TIMEOUT,
             extra_responses=FEATURE_ERRORS)
async def smart_replies(request: web.Request) -> web.StreamResponse:
    """1 to 5 short reply suggestions for the latest incoming message."""
    body: SmartRepliesIn = await _optional_body(request, SmartRepliesIn)
    result = await _service(request).smart_replies(
        _user_id(request), _conversation_id(request), count=body.count)
    return json_response(result)
