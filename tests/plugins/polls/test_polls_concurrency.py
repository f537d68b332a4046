"""50 voters at once: exact counts, on SQLite and (when available) PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .helpers import counts, create_poll, make_team, vote

VOTERS = 50


def _async_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {}
    try:
        url = request.getfixturevalue("postgres_url")
    except pytest.FixtureLookupError:
        pytest.skip("no postgres_url fixture in tests/conftest.py")
    return {"database": {"url": _async_url(str(url))}}


async def test_fifty_concurrent_voters_exact_counts(polls_client, sc_ws, database):
    client = await polls_client(database)
    team = await make_team(client, VOTERS)
    ws = await sc_ws(client, team.owner.access_token)
    poll = await create_poll(team, team.owner, options=["red", "green", "blue"])
    red, green, blue = (o["id"] for o in poll["options"])

    # everyone votes at once: 25 red, 15 green, 10 blue
    plan = [red] * 25 + [green] * 15 + [blue] * 10
    await asyncio.gather(
        *(vote(client, u, poll["id"], [o]) for u, o in zip(team.members, plan, strict=True))
    )
    r = await client.get(f"/v1/polls/{poll['id']}", headers=team.owner.headers)
    body = await r.json()
    assert counts(body) == [25, 15, 10]
    assert body["voter_count"] == VOTERS and body["total_votes"] == VOTERS
    assert body["version"] == VOTERS

    # everyone changes their mind at once (green → red) while the blue voters
    # retract, and one voter hammers revotes concurrently with itself
    greens, blues = team.members[25:40], team.members[40:]
    hammer = team.members[0]
    await asyncio.gather(
        *(vote(client, u, poll["id"], [red]) for u in greens),
        *(client.delete(f"/v1/polls/{poll['id']}/votes", headers=u.headers) for u in blues),
        *(vote(client, hammer, poll["id"], [o]) for o in (green, blue, red, green, red)),
    )
    r = await client.get(f"/v1/polls/{poll['id']}", headers=hammer.headers)
    body = await r.json()
    assert len(body["my_votes"]) == 1  # never two ballots for one voter
    mine = body["my_votes"][0]
    expected = {red: 39, green: 0, blue: 0}
    expected[mine] += 1
    assert counts(body) == [expected[red], expected[green], expected[blue]]
    assert body["voter_count"] == VOTERS - len(blues)

    # the last poll.updated event carries the final counts (events are versioned)
    final_version = body["version"]
    frame = await ws.expect("poll.updated", where=lambda f: f["data"]["version"] == final_version)
    assert counts(frame["data"]) == counts(body)


async def test_concurrent_votes_and_close_never_count_after_close(polls_client, database):
    client = await polls_client(database)
    team = await make_team(client, 20)
    poll = await create_poll(team, team.owner)
    option = poll["options"][0]["id"]

    async def try_vote(user: Any) -> int:
        r = await client.post(
            f"/v1/polls/{poll['id']}/votes", json={"option_ids": [option]}, headers=user.headers
        )
        assert r.status in (200, 409), await r.text()
        return r.status

    async def close() -> int:
        r = await client.post(f"/v1/polls/{poll['id']}/close", headers=team.owner.headers)
        return r.status

    results = await asyncio.gather(
        *(try_vote(u) for u in team.members[:10]),
        close(),
        *(try_vote(u) for u in team.members[10:]),
    )
    accepted = sum(1 for s in results[:10] + results[11:] if s == 200)
    assert results[10] == 200
    r = await client.get(f"/v1/polls/{poll['id']}", headers=team.owner.headers)
    body = await r.json()
    assert body["status"] == "closed"
    # every accepted ballot is counted, no refused one is
    assert counts(body)[0] == accepted == body["voter_count"]
