"""Plugin ``chat``: direct and group conversations, messages, realtime delivery,
typing, presence and read receipts.

Hook implementations only; the logic is in :mod:`.service`. Other plugins reach chat
through ``kernel.require("chat.conversations")`` (see docs/chat.md, "For other
plugins"), never by importing this package.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dynaconf import Validator

from secureconnect import Kernel, Route, hookimpl
from secureconnect.migrations import MigrationSource
from secureconnect.ws.gateway import Connection, WsHandler

from .conversations import ConversationRepository
from .events import handlers
from .models import metadata
from .routes import STATE_KEY, routes
from .service import ChatService, ChatSettings
from .store import SqlMessageStore

MIGRATIONS = Path(__file__).parent / "migrations"
#: the name other plugins ``kernel.require`` (docs/chat.md)
CONVERSATIONS = "chat.conversations"
MESSAGE_TYPES = ("text", "image", "video", "file", "system", "poll")


@hookimpl
def sc_settings_validators() -> list[Validator]:
    size = {"is_type_of": int, "gte": 1, "lte": 16 * 1024 * 1024}
    return [
        Validator("chat.max_group_members", is_type_of=int, gte=2, lte=100_000),
        *(Validator(f"chat.max_content_bytes.{t}", **size) for t in MESSAGE_TYPES),
        Validator("chat.max_metadata_bytes", is_type_of=int, gte=0, lte=1024 * 1024),
        Validator("chat.history_default_limit", is_type_of=int, gte=1, lte=1000),
        Validator("chat.history_max_limit", is_type_of=int, gte=1, lte=1000),
        Validator("chat.conversations_max_limit", is_type_of=int, gte=1, lte=1000),
        Validator("chat.typing_ttl", is_type_of=(int, float), gt=0, lte=300),
        Validator("chat.typing_throttle", is_type_of=(int, float), gte=0, lte=300),
        Validator("chat.presence_ttl", is_type_of=(int, float), gt=0),
        Validator("chat.last_seen_ttl", is_type_of=(int, float), gt=0),
        Validator("chat.max_pending_notifications", is_type_of=int, gte=1, lte=1_000_000),
    ]


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("chat", metadata, MIGRATIONS)]


async def _chat_service(kernel: Kernel) -> AsyncIterator[None]:
    store = SqlMessageStore(kernel.db)
    service = ChatService(
        kernel,
        ChatSettings.from_settings(kernel.settings.chat),
        store,
        ConversationRepository(kernel.db, write_lock=store.write_lock),
    )
    service.start()
    kernel.state[STATE_KEY] = service
    kernel.provide(CONVERSATIONS, service)
    try:
        yield
    finally:
        await service.close()
        kernel.state.pop(STATE_KEY, None)


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_chat_service]


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    return list(routes)


@hookimpl
def sc_ws_handlers(kernel: Kernel) -> dict[str, WsHandler]:
    return handlers(kernel)


def _service(kernel: Kernel) -> ChatService | None:
    found: ChatService | None = kernel.state.get(STATE_KEY)
    return found


@hookimpl
async def sc_authorize_topic(kernel: Kernel, user: Any, topic: str) -> bool | None:
    service = _service(kernel)
    if service is None:
        return None
    return await service.authorize_topic(user, topic)


@hookimpl
async def sc_ws_connected(kernel: Kernel, conn: Connection) -> None:
    service = _service(kernel)
    if service is not None:
        await service.connected(conn)


@hookimpl
async def sc_ws_disconnected(kernel: Kernel, conn: Connection) -> None:
    service = _service(kernel)
    if service is not None:
        await service.disconnected(conn)


@hookimpl
async def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    service = _service(kernel)
    if service is not None and user.get("id") is not None:
        await service.leave_all(str(user["id"]))
