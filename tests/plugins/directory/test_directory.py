"""The user directory over HTTP (../shared/API.md "users"): profiles without email,
exact email look-up, co-member search with paging, profile updates, presence only for
co-members, 4xx for bad input, the look-up rate-limit class."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import TestUser, register_and_login

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/directory-test.db"


@pytest.fixture
async def client(sc_client: Any) -> Any:
    return await sc_client({"database": {"url": SQLITE_FILE}})


async def _group(client: Any, owner: TestUser, members: list[TestUser]) -> str:
    r = await client.post("/v1/conversations", headers=owner.headers, json={
        "type": "group", "name": "g", "participant_ids": [m.user_id for m in members]})
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def test_profile_is_public_and_never_carries_the_email(client: Any) -> None:
    a = await register_and_login(client, display_name="Ada")
    b = await register_and_login(client, display_name="Bob")
    r = await client.get(f"/v1/users/{b.user_id}", headers=a.headers)
    assert r.status == 200
    body = await r.json()
    assert body == {"id": b.user_id, "display_name": "Bob", "avatar_file_id": None,
                    "presence": None}  # no shared conversation: no presence
    assert b.email not in await r.text()
    r = await client.get(f"/v1/users/{uuid.uuid4()}", headers=a.headers)
    assert r.status == 404
    assert (await r.json())["code"] == "user_not_found"
    r = await client.get(f"/v1/users/{'x' * 500}", headers=a.headers)
    assert r.status == 404
    assert (await client.get(f"/v1/users/{b.user_id}")).status == 401


async def test_presence_only_for_co_members(client: Any) -> None:
    a = await register_and_login(client, display_name="Ada")
    b = await register_and_login(client, display_name="Bob")
    await _group(client, a, [b])
    body = await (await client.get(f"/v1/users/{b.user_id}", headers=a.headers)).json()
    assert body["presence"] == {"online": False}
    async with client.ws_connect(f"/v1/ws?access_token={b.access_token}"):
        for _ in range(100):
            body = await (await client.get(f"/v1/users/{b.user_id}", headers=a.headers)).json()
            if body["presence"] == {"online": True}:
                break
            await asyncio.sleep(0.05)
        assert body["presence"] == {"online": True}


async def test_exact_email_lookup(client: Any) -> None:
    a = await register_and_login(client)
    b = await register_and_login(client, email="Bob.Smith@Example.COM", display_name="Bob")
    for query in ("bob.smith@example.com", "  Bob.Smith@EXAMPLE.com "):
        r = await client.get("/v1/users", params={"email": query}, headers=a.headers)
        assert r.status == 200
        body = await r.json()
        assert [u["id"] for u in body["users"]] == [b.user_id]
        assert "email" not in body["users"][0]
    for query in ("bob.smith@example.co", "bob", "bob.smith@", "%@example.com"):
        r = await client.get("/v1/users", params={"email": query}, headers=a.headers)
        assert r.status == 200, query
        assert (await r.json())["users"] == []


@pytest.mark.parametrize("params", [
    {}, {"email": "a@b.c", "q": "x"}, {"q": ""}, {"q": "x", "limit": "0"},
    {"q": "x", "limit": "abc"}, {"q": "x", "cursor": "!!!"}, {"q": "x", "other": "1"},
])
async def test_bad_queries_are_4xx(client: Any, params: dict[str, str]) -> None:
    a = await register_and_login(client)
    b = await register_and_login(client, display_name="xavier")
    await _group(client, a, [b])
    r = await client.get("/v1/users", params=params, headers=a.headers)
    assert 400 <= r.status < 500, await r.text()
    assert r.content_type == "application/problem+json"
    assert (await r.json())["code"]


async def test_search_only_among_co_members_by_prefix_with_paging(client: Any) -> None:
    await _search_scenario(client)


@pytest.mark.postgres
async def test_search_and_lookup_on_postgresql(sc_client: Any, postgres_url: str) -> None:
    """The LIKE escapes, case folding and keyset paging on PostgreSQL too."""
    client = await sc_client({"database": {"url": postgres_url}})
    await _search_scenario(client)
    a = await register_and_login(client)
    b = await register_and_login(client, email="Pg.User@Example.com")
    r = await client.get("/v1/users", params={"email": "pg.user@example.com"}, headers=a.headers)
    assert [u["id"] for u in (await r.json())["users"]] == [b.user_id]
    r = await client.patch("/v1/users/me", headers=a.headers,
                           json={"avatar_file_id": str(uuid.uuid4())})
    assert r.status == 200


async def _search_scenario(client: Any) -> None:
    me = await register_and_login(client, display_name="Me")
    members = [await register_and_login(client, display_name=f"Sam {i}") for i in range(5)]
    other = await register_and_login(client, display_name="Sam Stranger")
    await _group(client, me, members[:3])
    await _group(client, me, members[3:])
    names: list[str] = []
    cursor = None
    while True:
        params = {"q": "sAm", "limit": "2", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/v1/users", params=params, headers=me.headers)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert len(body["users"]) <= 2
        names += [u["display_name"] for u in body["users"]]
        assert all(u["presence"] is not None for u in body["users"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert names == [f"Sam {i}" for i in range(5)]
    assert "Sam Stranger" not in names and other.user_id
    # wildcard characters are literal ("sa_" would match "Sam 0" as a LIKE pattern)
    for q in ("%", "sa_", "s%m"):
        r = await client.get("/v1/users", params={"q": q}, headers=me.headers)
        assert (await r.json())["users"] == [], q
    # a loner finds nobody
    r = await client.get("/v1/users", params={"q": "s"}, headers=other.headers)
    assert (await r.json())["users"] == []


async def test_update_display_name_and_avatar(client: Any) -> None:
    a = await register_and_login(client, display_name="Old")
    avatar = str(uuid.uuid4())
    r = await client.patch("/v1/users/me", headers=a.headers,
                           json={"display_name": "  New   Name ", "avatar_file_id": avatar})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert (body["display_name"], body["avatar_file_id"]) == ("New Name", avatar)
    me = await (await client.get("/v1/users/me", headers=a.headers)).json()
    assert me["display_name"] == "New Name"
    r = await client.patch("/v1/users/me", headers=a.headers, json={"avatar_file_id": None})
    assert (await r.json())["avatar_file_id"] is None
    for bad in ({}, {"display_name": ""}, {"display_name": None}, {"display_name": "a\u0007b"},
                {"avatar_file_id": "nope"}, {"email": "x@y.z"}, {"display_name": 5}):
        r = await client.patch("/v1/users/me", headers=a.headers, json=bad)
        assert r.status in (400, 422), (bad, await r.text())
        assert r.content_type == "application/problem+json"
        assert (await r.json())["code"]
    # the account's profile row goes with the account
    await client.patch("/v1/users/me", headers=a.headers, json={"avatar_file_id": avatar})
    kernel = client.app[KERNEL]
    await kernel.notify("sc_user_deleted", user={"id": a.user_id})
    r = await client.get(f"/v1/users/{a.user_id}", headers=a.headers)
    assert (await r.json())["avatar_file_id"] is None


async def test_email_lookups_have_their_own_rate_limit(sc_client: Any) -> None:
    client = await sc_client({"database": {"url": SQLITE_FILE}, "rate_limits": {
        "enabled": True, "classes": {"user_lookup": {"per_ip": "", "per_user": "3/minute"}}}})
    a = await register_and_login(client)
    statuses = []
    for _ in range(4):
        r = await client.get("/v1/users", params={"email": "x@example.com"}, headers=a.headers)
        statuses.append(r.status)
    assert statuses == [200, 200, 200, 429]
    assert r.headers.get("Retry-After")
    # searches and profiles are not in that class
    r = await client.get("/v1/users", params={"q": "x"}, headers=a.headers)
    assert r.status == 200
