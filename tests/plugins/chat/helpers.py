"""Helpers for the chat black-box tests; they speak only HTTP and WebSocket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secureconnect.testing.accounts import TestUser, register_many
from secureconnect.testing.helpers import merge_settings

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/chat-test.db"


#: shared helpers of secureconnect.testing, under the names these tests use
merge = merge_settings
users = register_many


async def create_group(
    client: Any, owner: TestUser, members: list[TestUser], name: str = "team"
) -> str:
    r = await client.post(
        "/v1/conversations",
        json={"type": "group", "participant_ids": [m.user_id for m in members], "name": name},
        headers=owner.headers,
    )
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def send(
    client: Any,
    user: TestUser,
    conversation_id: str,
    content: str = "hi",
    status: int = 201,
    headers: Mapping[str, str] | None = None,
    **fields: Any,
) -> Any:
    r = await client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": content, "message_type": "text", **fields},
        headers={**user.headers, **(headers or {})},
    )
    assert r.status == status, await r.text()
    return await r.json()


async def history(client: Any, user: TestUser, conversation_id: str, **params: Any) -> Any:
    r = await client.get(
        f"/v1/conversations/{conversation_id}/messages",
        params={k: str(v) for k, v in params.items()},
        headers=user.headers,
    )
    assert r.status == 200, await r.text()
    return await r.json()


async def all_messages(client: Any, user: TestUser, conversation_id: str) -> list[Any]:
    out: list[Any] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["before"] = cursor
        page = await history(client, user, conversation_id, **params)
        out += page["messages"]
        cursor = page["next_cursor"]
        if not cursor:
            return out
