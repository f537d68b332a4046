"""Races the database settles: concurrent initiates and a join burst at the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .helpers import call_api, conversation, users


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_concurrent_initiates_make_one_call_and_joins_respect_the_limit(
        video_client: Any, request: pytest.FixtureRequest, store: str) -> None:
    # timers far beyond the test's length: on a busy CI machine the fast test timers
    # (1.5 s ring, 1 s grace) once ended the call before the joins arrived
    overrides: dict[str, Any] = {"video": {"max_participants": 3, "ring_timeout": 60,
                                           "reconnect_grace": 60}}
    if store == "postgres":
        overrides["database"] = {"url": request.getfixturevalue("postgres_url")}
    client = await video_client(overrides)
    people = await users(client, 7)
    cid = await conversation(client, people[0], people[1:])

    async def initiate(user: Any) -> Any:
        r = await client.post(f"/v1/conversations/{cid}/calls", json={"type": "audio"},
                              headers=user.headers)
        return r.status, await r.json()

    answers = await asyncio.gather(*(initiate(u) for u in people[:5]))
    created = [body for status, body in answers if status == 201]
    assert len(created) == 1, answers
    call_id = created[0]["id"]
    for status, body in answers:
        if status != 201:
            assert status == 409 and body["code"] == "call_in_progress"
            assert body["call_id"] == call_id
    caller = created[0]["initiator_id"]

    async def join(user: Any) -> int:
        r = await client.post(f"/v1/calls/{call_id}/join", headers=user.headers)
        if r.status != 200:
            assert (await r.json())["code"] == "call_full"
        return r.status

    others = [u for u in people if u.user_id != caller]
    statuses = await asyncio.gather(*(join(u) for u in others))
    assert sorted(statuses) == [200, 200] + [409] * (len(others) - 2), statuses
    view = await call_api(client, people[0], "GET", f"/v1/calls/{call_id}")
    assert sum(p["status"] == "joined" for p in view["participants"]) == 3
