"""REST handlers for polls (../shared/API.md "polls"): parse → service → serialise."""

from __future__ import annotations

import uuid
from typing import Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from secureconnect.http.context import principal
from secureconnect.http.handlers import json_response
from secureconnect.routing import RouteTable

from .domain import PollDraft, PollNotFound
from .service import PollService

routes = RouteTable(tag="polls")

STATE_KEY = "polls"


class CreatePollIn(BaseModel):
    """A new poll. Limits (option count, lengths) come from the `[polls]` settings."""

    model_config = ConfigDict(extra="forbid")

    question: StrictStr = Field(min_length=1)
    options: list[StrictStr] = Field(min_length=2)
    allow_multiple: StrictBool = False
    #: multiple-choice only; defaults to the number of options
    max_choices: StrictInt | None = Field(default=None, ge=1)
    anonymous: StrictBool = False
    #: defaults to `polls.default_results_visibility`
    results_visibility: Literal["always", "after_close"] | None = None
    closes_at: AwareDatetime | None = None


class VoteIn(BaseModel):
    """A ballot: the chosen option ids. Voting again replaces the previous ballot."""

    model_config = ConfigDict(extra="forbid")

    option_ids: list[StrictStr] = Field(min_length=1)


class PollOptionOut(BaseModel):
    id: str
    text: str
    position: int
    #: null while results are hidden (`results_visibility` = after_close, poll open)
    votes: int | None
    #: user ids per option; always null for anonymous polls
    voters: list[str] | None


class PollOut(BaseModel):
    id: str
    conversation_id: str
    creator_id: str
    question: str
    options: list[PollOptionOut]
    allow_multiple: bool
    max_choices: int
    anonymous: bool
    results_visibility: Literal["always", "after_close"]
    results_visible: bool
    status: Literal["open", "closed"]
    closed_reason: Literal["closed", "expired"] | None
    closes_at: str | None
    closed_at: str | None
    created_at: str
    message_id: str | None
    version: int
    voter_count: int
    total_votes: int | None
    #: the caller's own choices
    my_votes: list[str]


def _service(request: web.Request) -> PollService:
    from secureconnect.http.context import KERNEL

    service: PollService = request.app[KERNEL].state[STATE_KEY]
    return service


def _user_id(request: web.Request) -> str:
    return str(principal(request).user_id)


def _uuid_param(request: web.Request, name: str) -> str:
    raw = request.match_info[name]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise PollNotFound(f"no such {name.removesuffix('_id')}") from None


@routes.post(
    "/v1/conversations/{conversation_id}/polls",
    body=CreatePollIn,
    response=PollOut,
    status=201,
    extra_responses={403: "not a participant", 422: "invalid poll"},
)
async def create_poll(request: web.Request, body: CreatePollIn) -> web.StreamResponse:
    """Create a poll in a conversation; it also appears in the timeline as a `poll` message."""
    draft = PollDraft(**body.model_dump())
    conversation_id = _uuid_param(request, "conversation_id")
    poll = await _service(request).create(_user_id(request), conversation_id, draft)
    return json_response(poll, status=201)


@routes.get(
    "/v1/polls/{poll_id}",
    response=PollOut,
    extra_responses={403: "not a participant", 404: "no such poll"},
)
async def get_poll(request: web.Request) -> web.StreamResponse:
    """A poll with its results (voter identities hidden when anonymous)."""
    poll = await _service(request).get(_user_id(request), _uuid_param(request, "poll_id"))
    return json_response(poll)


@routes.post(
    "/v1/polls/{poll_id}/votes",
    body=VoteIn,
    response=PollOut,
    extra_responses={403: "not a participant", 409: "poll closed", 422: "invalid ballot"},
)
async def vote(request: web.Request, body: VoteIn) -> web.StreamResponse:
    """Vote; voting again replaces the previous vote."""
    poll = await _service(request).vote(
        _user_id(request), _uuid_param(request, "poll_id"), list(body.option_ids)
    )
    return json_response(poll)


@routes.delete(
    "/v1/polls/{poll_id}/votes",
    response=PollOut,
    extra_responses={403: "not a participant", 409: "poll closed"},
)
async def retract_vote(request: web.Request) -> web.StreamResponse:
    """Retract the caller's vote (answers the updated poll)."""
    poll = await _service(request).retract(_user_id(request), _uuid_param(request, "poll_id"))
    return json_response(poll)


@routes.post(
    "/v1/polls/{poll_id}/close",
    response=PollOut,
    extra_responses={403: "not the creator or an admin", 409: "already closed"},
)
async def close_poll(request: web.Request) -> web.StreamResponse:
    """Close a poll (its creator or a conversation admin); closed polls reject votes."""
    poll = await _service(request).close(_user_id(request), _uuid_param(request, "poll_id"))
    return json_response(poll)
