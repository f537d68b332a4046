"""Plugin ``chat``: direct and group conversations, messages, realtime delivery,
typing, presence and read receipts.

Hook implementations only; the logic is in :mod:`.service`. Other plugins reach chat
only through its published interface, :mod:`.api` (``kernel.require(CONVERSATIONS)``),
and the hooks it declares in :mod:`.hookspecs` (see docs/chat.md, "For other plugins").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pluggy
from dynaconf import Validator

from secureconnect import HealthCheck, Kernel, Route, hookimpl
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel
from secureconnect.ws.gateway import Connection, WsHandler

from . import hookspecs
from .api import CONVERSATIONS
from .cassandra_store import CassandraMessageStore
from .conversations import ConversationRepository
from .events import handlers
from .interface import ChatConversations
from .models import metadata
from .routes import STATE_KEY, routes
from .service import ChatService, ChatSettings
from .store import MessageStore, SqlMessageStore

MIGRATIONS = Path(__file__).parent / "migrations"
STORE_KEY = "chat.message_store"
MESSAGE_TYPES = ("text", "image", "video", "file", "system", "poll")


@hookimpl
def sc_addhooks(pm: pluggy.PluginManager) -> None:
    pm.add_hookspecs(hookspecs)


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
        Validator("chat.message_store", is_in=("sql", "cassandra")),
        Validator("chat.cassandra_bucket_size", is_type_of=int, gte=10, lte=100_000),
        Validator("chat.membership_cache_ttl", is_type_of=(int, float), gte=0, lte=60),
        Validator("chat.membership_cache_size", is_type_of=int, gte=1, lte=10_000_000),
        Validator("chat.activity_flush_interval", is_type_of=(int, float), gte=0, lte=10),
    ]


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("chat", metadata, MIGRATIONS)]


def _uses_cassandra(kernel: Kernel) -> bool:
    return str(kernel.settings.chat.message_store) == "cassandra"


async def _chat_service(kernel: Kernel) -> AsyncIterator[None]:
    store: MessageStore
    if _uses_cassandra(kernel):
        await kernel.cassandra.open()
        store = CassandraMessageStore(
            kernel.cassandra,
            bucket_size=int(kernel.settings.chat.cassandra_bucket_size),
            auto_migrate=bool(kernel.settings.database.auto_migrate),
        )
        # conversations stay in SQL: SQLite's single writer still needs its queue
        write_lock = asyncio.Lock() if kernel.db.is_sqlite else None
    else:
        sql_store = SqlMessageStore(kernel.db)
        store, write_lock = sql_store, sql_store.write_lock
    service = ChatService(
        kernel,
        ChatSettings.from_settings(kernel.settings.chat),
        store,
        ConversationRepository(kernel.db, write_lock=write_lock, read_cache=kernel.read_cache),
    )
    await service.start()
    kernel.state[STATE_KEY] = service
    kernel.state[STORE_KEY] = store
    kernel.provide(CONVERSATIONS, ChatConversations(service))
    try:
        yield
    finally:
        kernel.withdraw(CONVERSATIONS)
        await service.close()
        kernel.state.pop(STATE_KEY, None)
        kernel.state.pop(STORE_KEY, None)
        if isinstance(store, SqlMessageStore):
            await store.close()
        if _uses_cassandra(kernel):
            await kernel.cassandra.close()


@hookimpl
async def sc_migrate(kernel: Kernel) -> list[str]:
    store = kernel.state.get(STORE_KEY)
    if isinstance(store, CassandraMessageStore):
        return await store.migrate()
    return []


@hookimpl
def sc_health_checks(kernel: Kernel) -> list[HealthCheck]:
    if not _uses_cassandra(kernel):
        return []
    return [HealthCheck("cassandra", kernel.cassandra.ping)]


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
    return await service.conversations.authorize_topic(user, topic)


@hookimpl
async def sc_ws_connected(kernel: Kernel, conn: Connection) -> None:
    service = _service(kernel)
    if service is not None:
        await service.presence.connected(conn)


@hookimpl
async def sc_ws_disconnected(kernel: Kernel, conn: Connection) -> None:
    service = _service(kernel)
    if service is not None:
        await service.presence.disconnected(conn)


@hookimpl
async def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    service = _service(kernel)
    if service is not None and user.get("id") is not None:
        await service.conversations.leave_all(str(user["id"]))


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """The chat UI of the web client (static/chat.js; docs/web.md)."""
    return [WebPanel("chat", Path(__file__).parent / "static", scripts=("chat.js",),
                     styles=("chat.css",), title="Conversations")]
