"""REST handlers for chat (../shared/API.md "chat"): parse → service → serialise."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import UUID4, BaseModel, ConfigDict, Field, StrictBool, StrictStr

from secureconnect.errors import BadRequest
from secureconnect.http.context import principal
from secureconnect.http.handlers import dumps, json_bytes, json_response
from secureconnect.routing import RouteTable

from .conversation_service import ConversationService
from .message_service import Draft, MessageService
from .service import ChatService

routes = RouteTable(tag="chat", extra_responses={403: "not a participant of the conversation"})

STATE_KEY = "chat"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 200

UserId = StrictStr  # any id the auth plugin issued; checked against accounts by the service


class CreateConversationIn(BaseModel):
    """A direct conversation (exactly one other participant) or a group."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["direct", "group"]
    participant_ids: list[UserId] = Field(default_factory=list, max_length=10_000)
    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    description: StrictStr | None = Field(default=None, max_length=2000)


class UpdateConversationIn(BaseModel):
    """Group settings; only the fields given change."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    description: StrictStr | None = Field(default=None, max_length=2000)


class AddParticipantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    #: only the owner adds admins
    role: Literal["member", "admin"] = "member"


class SetRoleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["member", "admin"]


class SendMessageIn(BaseModel):
    """A message. ``content`` of an ``is_encrypted`` message is opaque ciphertext the
    server stores and relays without reading. Size limits per type: ``[chat]``."""

    model_config = ConfigDict(extra="forbid")

    content: StrictStr
    message_type: StrictStr = "text"
    is_encrypted: StrictBool = False
    metadata: dict[str, Any] | None = None
    #: a drive file id for image/video/file messages
    file_id: UUID4 | None = None


class EditMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: StrictStr
    metadata: dict[str, Any] | None = None


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message_id: StrictStr = Field(min_length=1, max_length=64)


class HistoryQuery(BaseModel):
    before: str | None = Field(default=None, max_length=200)
    limit: int | None = Field(default=None, ge=1, le=1000)


class ListQuery(BaseModel):
    limit: int | None = Field(default=None, ge=1, le=1000)


class MessageOut(BaseModel):
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    message_type: str
    #: null once deleted
    content: str | None
    is_encrypted: bool
    metadata: dict[str, Any] | None
    file_id: str | None
    created_at: str
    edited_at: str | None
    deleted: bool


class HistoryOut(BaseModel):
    messages: list[MessageOut]
    #: pass as `before` for older messages; null at the start of the history
    next_cursor: str | None


class ParticipantOut(BaseModel):
    user_id: str
    role: str
    joined_at: str | None
    last_read_seq: int
    online: bool
    last_seen_at: str | None


class ConversationOut(BaseModel):
    id: str
    type: str
    name: str | None
    description: str | None
    created_by: str
    created_at: str | None
    updated_at: str | None
    last_message_at: str | None
    last_seq: int
    role: str | None
    unread_count: int
    participants: list[ParticipantOut]


class ConversationListOut(BaseModel):
    conversations: list[dict[str, Any]]


class ReceiptOut(BaseModel):
    conversation_id: str
    user_id: str
    message_id: str
    seq: int
    unread_count: int


def _service(request: web.Request) -> ChatService:
    from secureconnect.http.context import KERNEL

    service: ChatService = request.app[KERNEL].state[STATE_KEY]
    return service


def _conversations(request: web.Request) -> ConversationService:
    return _service(request).conversations


def _messages(request: web.Request) -> MessageService:
    return _service(request).messages


def _me(request: web.Request) -> str:
    return str(principal(request).user_id)


def _cid(request: web.Request) -> str:
    return request.match_info["conversation_id"]


def idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise BadRequest(
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY} printable characters",
            code="invalid_idempotency_key",
        )
    return key


@routes.post(
    "/v1/conversations",
    body=CreateConversationIn,
    response=ConversationOut,
    status=201,
    extra_responses={200: "the direct conversation already existed"},
)
async def create_conversation(
    request: web.Request, body: CreateConversationIn
) -> web.StreamResponse:
    """Create a direct or group conversation."""
    view, created = await _conversations(request).create_conversation(
        _me(request),
        type_=body.type,
        participant_ids=body.participant_ids,
        name=body.name,
        description=body.description,
    )
    return json_response(view, status=201 if created else 200)


@routes.get("/v1/conversations", query=ListQuery, response=ConversationListOut)
async def list_conversations(request: web.Request, query: ListQuery) -> web.StreamResponse:
    """My conversations, newest activity first, with unread counts."""
    return json_bytes(await _conversations(request).list_rendered(
        _me(request), limit=query.limit, render=lambda found: dumps({"conversations": found})))


@routes.get("/v1/conversations/{conversation_id}", response=ConversationOut)
async def get_conversation(request: web.Request) -> web.StreamResponse:
    """One conversation with its participants (and their presence)."""
    view = await _conversations(request).get_conversation(_me(request), _cid(request))
    return json_response(view)


@routes.patch(
    "/v1/conversations/{conversation_id}", body=UpdateConversationIn, response=ConversationOut
)
async def update_conversation(
    request: web.Request, body: UpdateConversationIn
) -> web.StreamResponse:
    """Change a group's settings (owner and admins)."""
    fields = body.model_dump(exclude_unset=True)
    return json_response(
        await _conversations(request).update_conversation(_me(request), _cid(request), fields)
    )


@routes.post(
    "/v1/conversations/{conversation_id}/participants",
    body=AddParticipantIn,
    status=201,
    extra_responses={200: "already a participant"},
)
async def add_participant(request: web.Request, body: AddParticipantIn) -> web.StreamResponse:
    """Add someone to a group (owner and admins)."""
    participant, added = await _conversations(request).add_participant(
        _me(request), _cid(request), body.user_id, body.role
    )
    return json_response(participant, status=201 if added else 200)


@routes.patch("/v1/conversations/{conversation_id}/participants/{user_id}", body=SetRoleIn)
async def set_role(request: web.Request, body: SetRoleIn) -> web.StreamResponse:
    """Make a participant admin or member (owner only)."""
    return json_response(
        await _conversations(request).set_role(
            _me(request), _cid(request), request.match_info["user_id"], body.role
        )
    )


@routes.delete("/v1/conversations/{conversation_id}/participants/{user_id}", status=204)
async def remove_participant(request: web.Request) -> web.StreamResponse:
    """Remove a participant (admins) or leave (yourself)."""
    await _conversations(request).remove_participant(
        _me(request), _cid(request), request.match_info["user_id"]
    )
    return web.Response(status=204)


@routes.post(
    "/v1/conversations/{conversation_id}/messages",
    body=SendMessageIn,
    response=MessageOut,
    status=201,
    rate_limit="chat_send",
    extra_responses={
        200: "the Idempotency-Key matched an earlier send",
        413: "content or metadata over the size limit",
    },
)
async def send_message(request: web.Request, body: SendMessageIn) -> web.StreamResponse:
    """Send a message (optional `Idempotency-Key` header)."""
    message, created = await _messages(request).send_message(
        _me(request),
        _cid(request),
        Draft(
            content=body.content,
            message_type=body.message_type,
            is_encrypted=body.is_encrypted,
            metadata=body.metadata,
            file_id=None if body.file_id is None else str(body.file_id),
        ),
        idempotency_key=idempotency_key(request),
    )
    return json_response(message, status=201 if created else 200)


@routes.get("/v1/conversations/{conversation_id}/messages", query=HistoryQuery, response=HistoryOut)
async def history(request: web.Request, query: HistoryQuery) -> web.StreamResponse:
    """Messages newest first; `next_cursor` pages to older ones."""
    return json_bytes(
        await _messages(request).history_rendered(
            _me(request), _cid(request), before=query.before, limit=query.limit, render=dumps
        )
    )


@routes.patch(
    "/v1/conversations/{conversation_id}/messages/{message_id}",
    body=EditMessageIn,
    response=MessageOut,
)
async def edit_message(request: web.Request, body: EditMessageIn) -> web.StreamResponse:
    """Edit your own message."""
    return json_response(
        await _messages(request).edit_message(
            _me(request),
            _cid(request),
            request.match_info["message_id"],
            content=body.content,
            metadata=body.metadata,
        )
    )


@routes.delete("/v1/conversations/{conversation_id}/messages/{message_id}", response=MessageOut)
async def delete_message(request: web.Request) -> web.StreamResponse:
    """Delete your own message (a tombstone stays in the timeline)."""
    return json_response(
        await _messages(request).delete_message(
            _me(request), _cid(request), request.match_info["message_id"]
        )
    )


@routes.post("/v1/conversations/{conversation_id}/read", body=ReadIn, response=ReceiptOut)
async def mark_read(request: web.Request, body: ReadIn) -> web.StreamResponse:
    """Read receipt: everything up to this message is read."""
    return json_response(
        await _messages(request).mark_read(_me(request), _cid(request), body.message_id)
    )
