"""Votes and close (issue 22, item 26): once the close has been answered, no vote is
accepted and none is counted — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.plugins.polls.helpers import SQLITE_FILE, counts, create_poll, make_team


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"database": {"url": SQLITE_FILE}}
    return {"database": {"url": request.getfixturevalue("postgres_url")}}


async def test_no_vote_lands_after_the_close_answer(sc_client, database):
    client = await sc_client(database)
    team = await make_team(client, 8)
    poll = await create_poll(team, team.owner)
    pid = poll["id"]
    option = poll["options"][0]["id"]
    closed = asyncio.Event()
    # (sent after the close answer?, status) per vote
    outcomes: list[tuple[bool, int]] = []

    async def voter(user: Any) -> None:
        # each voter votes again and again (a revote is a vote) until it has sent one
        # vote after the close was answered
        for _ in range(500):
            after_close = closed.is_set()
            r = await client.post(f"/v1/polls/{pid}/votes", json={"option_ids": [option]},
                                  headers=user.headers)
            assert r.status in (200, 409), await r.text()
            outcomes.append((after_close, r.status))
            if after_close:
                return
            await asyncio.sleep(0.01)

    async def closer() -> None:
        await asyncio.sleep(0.05)
        r = await client.post(f"/v1/polls/{pid}/close", headers=team.owner.headers)
        assert r.status == 200, await r.text()
        closed.set()

    await asyncio.gather(closer(), *(voter(u) for u in team.members))
    late = [status for after, status in outcomes if after]
    assert late, "no vote was sent after the close answer: the race was not exercised"
    assert set(late) == {409}, f"{late.count(200)} votes accepted after the close answer"
    r = await client.get(f"/v1/polls/{pid}", headers=team.owner.headers)
    body = await r.json()
    assert body["status"] == "closed"
    assert counts(body)[0] == body["voter_count"] <= len(team.members)
    # and after the fact: still refused, nothing counted
    for user in team.members[:3]:
        r = await client.post(f"/v1/polls/{pid}/votes", json={"option_ids": [option]},
                              headers=user.headers)
        assert r.status == 409 and (await r.json())["code"] == "poll_closed"
    r = await client.get(f"/v1/polls/{pid}", headers=team.owner.headers)
    assert counts(await r.json()) == counts(body)
