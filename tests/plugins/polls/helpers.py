"""Helpers for the polls black-box tests; they speak only HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from secureconnect.testing.accounts import TestUser, register_many
from secureconnect.testing.helpers import merge_settings

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/polls-test.db"


#: shared helpers of secureconnect.testing, under the names these tests use
merge = merge_settings
users = register_many


@dataclass
class Team:
    """A group conversation: ``owner`` created it, ``members`` were added."""

    client: Any
    conversation_id: str
    owner: TestUser
    members: list[TestUser]

    @property
    def everyone(self) -> list[TestUser]:
        return [self.owner, *self.members]


async def make_team(client: Any, n_members: int = 2, name: str = "team") -> Team:
    owner, *members = await users(client, n_members + 1)
    r = await client.post(
        "/v1/conversations",
        json={"type": "group", "participant_ids": [m.user_id for m in members], "name": name},
        headers=owner.headers,
    )
    assert r.status == 201, await r.text()
    return Team(client, str((await r.json())["id"]), owner, members)


async def create_poll(team: Team, user: TestUser, status: int = 201, **fields: Any) -> Any:
    body = {"question": "Lunch?", "options": ["pizza", "sushi", "salad"], **fields}
    r = await team.client.post(
        f"/v1/conversations/{team.conversation_id}/polls", json=body, headers=user.headers
    )
    assert r.status == status, await r.text()
    return await r.json()


async def vote(
    client: Any, user: TestUser, poll_id: str, option_ids: list[str], status: int = 200
) -> Any:
    r = await client.post(
        f"/v1/polls/{poll_id}/votes", json={"option_ids": option_ids}, headers=user.headers
    )
    assert r.status == status, await r.text()
    return await r.json()


def counts(poll: Mapping[str, Any]) -> list[int | None]:
    return [o["votes"] for o in poll["options"]]
