"""Helpers for the ai black-box tests: accounts, conversations and messages over HTTP."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from secureconnect.testing.accounts import TestUser, register_many
from secureconnect.testing.helpers import merge_settings

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/ai-test.db"

#: shared helpers of secureconnect.testing, under the names these tests use
merge = merge_settings
users = register_many

SECRET = "SECRET-CIPHERTEXT-7f3a9c"

TALK = [
    "The release of version 2.0 is planned for Friday afternoon",
    "Before the release we must fix the login bug on the mobile app",
    "I think the login bug comes from the expired refresh tokens",
    "lol",
    "Marketing wants the release notes by Thursday evening",
    "ok",
    "I will write the release notes tomorrow morning",
    "Also the database migration needs a backup first",
    "thanks",
    "The backup of the production database is scheduled tonight at 11pm",
]


async def seed(room: Any) -> tuple[dict[int, str], set[int]]:
    """The talk, with three end-to-end encrypted messages in between."""
    people = [room.owner, *room.members]
    texts: dict[int, str] = {}
    encrypted: set[int] = set()
    for i, line in enumerate(TALK):
        m = await send(room, people[i % len(people)], line)
        texts[m["seq"]] = line
        if i % 4 == 1:
            e = await send(room, people[(i + 1) % len(people)], f"{SECRET}-{i}",
                           is_encrypted=True)
            encrypted.add(e["seq"])
    return texts, encrypted


@dataclass
class Room:
    client: Any
    conversation_id: str
    owner: TestUser
    members: list[TestUser]

    def url(self, what: str) -> str:
        return f"/v1/ai/conversations/{self.conversation_id}/{what}"


async def make_room(client: Any, n_members: int = 1) -> Room:
    owner, *members = await users(client, n_members + 1)
    r = await client.post(
        "/v1/conversations",
        json={"type": "group", "participant_ids": [m.user_id for m in members], "name": "room"},
        headers=owner.headers,
    )
    assert r.status == 201, await r.text()
    return Room(client, str((await r.json())["id"]), owner, members)


async def send(room: Room, user: TestUser, content: str, **fields: Any) -> dict[str, Any]:
    r = await room.client.post(
        f"/v1/conversations/{room.conversation_id}/messages",
        json={"content": content, "message_type": "text", **fields},
        headers=user.headers,
    )
    assert r.status == 201, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def opt_in(client: Any, user: TestUser, **fields: Any) -> dict[str, Any]:
    r = await client.put("/v1/ai/settings", json={"enabled": True, **fields},
                         headers=user.headers)
    assert r.status == 200, await r.text()
    body: dict[str, Any] = await r.json()
    return body


async def post(room: Room, user: TestUser, what: str, body: Any = None) -> Any:
    return await room.client.post(room.url(what), json=body if body is not None else {},
                                  headers=user.headers)


async def metric(client: Any, sample: str) -> float:
    body = await (await client.get("/metrics")).text()
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def pid_alive(pid: int) -> bool:
    """Is there a process ``pid`` (not yet reaped)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
