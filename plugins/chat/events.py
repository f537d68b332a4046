"""WebSocket handlers for chat (../shared/API.md "WebSocket"): same rules as REST."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import UUID4, BaseModel, ConfigDict, Field, StrictBool, StrictStr

from secureconnect.http.handlers import parse_model
from secureconnect.ws.gateway import Deferred

from .message_service import Draft
from .sendline import Ticket
from .service import ChatService

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel
    from secureconnect.ws.gateway import Connection, WsHandler

STATE_KEY = "chat"
SEND_RATE_CLASS = "chat_send"


class WsSendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: StrictStr = Field(min_length=1, max_length=64)
    content: StrictStr
    message_type: StrictStr = "text"
    is_encrypted: StrictBool = False
    metadata: dict[str, Any] | None = None
    file_id: UUID4 | None = None
    #: the idempotency key: a retry with the same client_id returns the same message
    client_id: StrictStr | None = Field(default=None, min_length=1, max_length=200)


class WsTypingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: StrictStr = Field(min_length=1, max_length=64)
    state: Literal["start", "stop"] = "start"


def handlers(kernel: Kernel) -> dict[str, WsHandler]:
    def service() -> ChatService:
        found: ChatService = kernel.state[STATE_KEY]
        return found

    async def send(conn: Connection, data: dict[str, Any]) -> Any:
        # The quick part, in frame order: validate and take the place in the
        # conversation's line. The rest runs deferred, so the socket's next frames are
        # read meanwhile and one client's sends still get their seqs in order.
        body = parse_model(WsSendIn, data)
        chat = service()
        ticket = chat.messages.reserve(body.conversation_id)
        return Deferred(_send(chat, str(conn.user_id), body, ticket))

    async def _send(chat: ChatService, user_id: str, body: WsSendIn, ticket: Ticket) -> Any:
        try:
            await kernel.rate_limits.hit(SEND_RATE_CLASS, user_id)
        except BaseException:
            ticket.close()
            raise
        message, _ = await chat.messages.send_message(
            user_id,
            body.conversation_id,
            Draft(
                content=body.content,
                message_type=body.message_type,
                is_encrypted=body.is_encrypted,
                metadata=body.metadata,
                file_id=None if body.file_id is None else str(body.file_id),
            ),
            idempotency_key=body.client_id,
            ticket=ticket,
        )
        return message

    async def typing(conn: Connection, data: dict[str, Any]) -> Any:
        body = parse_model(WsTypingIn, data)
        return await service().presence.typing(str(conn.user_id), body.conversation_id, body.state)

    return {"chat.send": send, "chat.typing": typing}
