"""The read cache on chat's read paths (issue 20): ``GET /v1/conversations`` and history
pages come from memory on a repeated read, yet every writer — REST, WebSocket and
plugin paths — shows on the very next read on the same instance, on another instance
once the bus delivers, and a non-member is refused although the page is cached.

Each check warms the route (the second read must be a cache hit), writes, and reads
again: the write must show at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import TestUser

from .helpers import create_group, send, users


def hits(client: Any, kind: str) -> float:
    value = client.app[KERNEL].metrics.registry.get_sample_value(
        "read_cache_hits_total", {"kind": kind})
    return value or 0.0


async def get_json(client: Any, user: TestUser, path: str, status: int = 200,
                   **params: Any) -> Any:
    r = await client.get(path, headers=user.headers,
                         params={k: str(v) for k, v in params.items()})
    assert r.status == status, await r.text()
    return await r.json()


KINDS = {"/v1/conversations": "chat.conversations"}


async def warm(client: Any, user: TestUser, path: str, **params: Any) -> Any:
    """Read until the answer comes from the read cache (a read that wrote the
    conversations' pending activity stores nothing: the write moved the versions it
    read), and it must match the database's."""
    kind = KINDS.get(path, "chat.history")
    first = await get_json(client, user, path, **params)
    for _ in range(3):
        before = hits(client, kind)
        second = await get_json(client, user, path, **params)
        assert second == first
        if hits(client, kind) == before + 1:
            return second
    raise AssertionError(f"{path} was not answered from the cache")


async def conversations(client: Any, user: TestUser) -> dict[str, Any]:
    found = await get_json(client, user, "/v1/conversations")
    return {c["id"]: c for c in found["conversations"]}


async def page(client: Any, user: TestUser, cid: str, **params: Any) -> Any:
    return await get_json(client, user, f"/v1/conversations/{cid}/messages", **params)


# -- the conversation list ---------------------------------------------------------------
async def test_list_shows_conversation_and_membership_writers_at_once(chat_client: Any) -> None:
    client = await chat_client()
    owner, a, c = await users(client, 3)
    g = await create_group(client, owner, [a], name="g")
    for u in (owner, a, c):
        await warm(client, u, "/v1/conversations")

    # create: the new conversation is in every participant's cached list
    h = await create_group(client, owner, [c], name="h")
    assert set(await conversations(client, c)) == {h}
    assert set(await conversations(client, owner)) == {g, h}
    await warm(client, owner, "/v1/conversations")

    # rename
    r = await client.patch(f"/v1/conversations/{g}", json={"name": "renamed"},
                           headers=owner.headers)
    assert r.status == 200, await r.text()
    assert (await conversations(client, a))[g]["name"] == "renamed"
    assert (await conversations(client, owner))[g]["name"] == "renamed"

    # add a participant
    await warm(client, c, "/v1/conversations")
    r = await client.post(f"/v1/conversations/{g}/participants",
                          json={"user_id": c.user_id}, headers=owner.headers)
    assert r.status == 201, await r.text()
    assert (await conversations(client, c))[g]["role"] == "member"

    # role change
    await warm(client, c, "/v1/conversations")
    r = await client.patch(f"/v1/conversations/{g}/participants/{c.user_id}",
                           json={"role": "admin"}, headers=owner.headers)
    assert r.status == 200, await r.text()
    assert (await conversations(client, c))[g]["role"] == "admin"

    # removal by an admin, and leaving
    await warm(client, c, "/v1/conversations")
    r = await client.delete(f"/v1/conversations/{g}/participants/{c.user_id}",
                            headers=owner.headers)
    assert r.status == 204
    assert set(await conversations(client, c)) == {h}
    await warm(client, owner, "/v1/conversations")
    r = await client.delete(f"/v1/conversations/{h}/participants/{owner.user_id}",
                            headers=owner.headers)
    assert r.status == 204
    assert set(await conversations(client, owner)) == {g}
    assert (await conversations(client, c))[h]["role"] == "owner"  # ownership passed on


async def test_list_shows_sends_and_read_receipts_from_every_path_at_once(
        chat_client: Any, sc_ws: Callable[..., Awaitable[Any]]) -> None:
    client = await chat_client()
    owner, a = await users(client, 2)
    g = await create_group(client, owner, [a], name="g")
    h = await create_group(client, owner, [a], name="h")
    await send(client, a, g, "first")
    for u in (owner, a):
        await warm(client, u, "/v1/conversations")

    # REST send: order, last_seq, the other's unread count, the sender's own marker
    await send(client, a, h, "rest")
    mine = await get_json(client, owner, "/v1/conversations")
    assert [x["id"] for x in mine["conversations"]] == [h, g]
    assert mine["conversations"][0]["last_seq"] == 1
    assert mine["conversations"][0]["unread_count"] == 1
    assert (await conversations(client, a))[h]["unread_count"] == 0

    # WebSocket send
    await warm(client, owner, "/v1/conversations")
    socket = await sc_ws(client, a.access_token)
    reply = await socket.request("chat.send", {"conversation_id": g, "content": "ws"})
    assert reply["type"] == "ack", reply
    mine = await get_json(client, owner, "/v1/conversations")
    assert [x["id"] for x in mine["conversations"]] == [g, h]
    assert mine["conversations"][0]["last_seq"] == 2
    assert mine["conversations"][0]["unread_count"] == 2

    # a plugin's message (polls posts one through chat's interface)
    await warm(client, owner, "/v1/conversations")
    r = await client.post(f"/v1/conversations/{h}/polls", headers=a.headers,
                          json={"question": "Lunch?", "options": ["pizza", "sushi"]})
    assert r.status == 201, await r.text()
    mine = await get_json(client, owner, "/v1/conversations")
    assert [x["id"] for x in mine["conversations"]] == [h, g]
    assert mine["conversations"][0]["last_seq"] == 2

    # read receipt
    await warm(client, owner, "/v1/conversations")
    newest = (await page(client, owner, h, limit=1))["messages"][0]["id"]
    r = await client.post(f"/v1/conversations/{h}/read", json={"message_id": newest},
                          headers=owner.headers)
    assert r.status == 200, await r.text()
    assert (await conversations(client, owner))[h]["unread_count"] == 0


async def test_list_beyond_its_limit_moves_when_an_unlisted_conversation_gets_a_message(
        chat_client: Any) -> None:
    client = await chat_client()
    owner, a = await users(client, 2)
    old = await create_group(client, owner, [a], name="old")
    await send(client, a, old, "long ago")
    newer = [await create_group(client, owner, [a], name=f"n{i}") for i in range(2)]
    for cid in newer:
        await send(client, a, cid, "later")
    first = await warm(client, owner, "/v1/conversations", limit=2)
    assert old not in [x["id"] for x in first["conversations"]]
    await send(client, a, old, "back on top")
    again = await get_json(client, owner, "/v1/conversations", limit=2)
    assert again["conversations"][0]["id"] == old


# -- history pages -----------------------------------------------------------------------
async def test_history_pages_show_every_message_writer_at_once(
        chat_client: Any, sc_ws: Callable[..., Awaitable[Any]]) -> None:
    client = await chat_client()
    owner, a = await users(client, 2)
    g = await create_group(client, owner, [a])
    path = f"/v1/conversations/{g}/messages"
    sent = [await send(client, a, g, f"m{i}") for i in range(5)]

    first = await warm(client, owner, path, limit=2)
    cursor = first["next_cursor"]
    older = await warm(client, owner, path, limit=2, before=cursor)
    assert [m["content"] for m in older["messages"]] == ["m2", "m1"]

    # REST send: the first page
    await send(client, a, g, "m5")
    assert [m["content"] for m in (await page(client, owner, g, limit=2))["messages"]] == [
        "m5", "m4"]

    # edit and delete of a message on a cursor page
    await warm(client, owner, path, limit=2, before=cursor)
    r = await client.patch(f"{path}/{sent[2]['id']}", json={"content": "m2 edited"},
                           headers=a.headers)
    assert r.status == 200, await r.text()
    assert (await page(client, owner, g, limit=2, before=cursor))["messages"][0][
        "content"] == "m2 edited"
    await warm(client, owner, path, limit=2, before=cursor)
    r = await client.delete(f"{path}/{sent[1]['id']}", headers=a.headers)
    assert r.status == 200, await r.text()
    tomb = (await page(client, owner, g, limit=2, before=cursor))["messages"][1]
    assert tomb["id"] == sent[1]["id"] and tomb["content"] is None and tomb["deleted"]

    # WebSocket send
    await warm(client, owner, path, limit=2)
    socket = await sc_ws(client, a.access_token)
    reply = await socket.request("chat.send", {"conversation_id": g, "content": "ws"})
    assert reply["type"] == "ack", reply
    assert (await page(client, owner, g, limit=2))["messages"][0]["content"] == "ws"

    # a plugin's message
    await warm(client, owner, path, limit=2)
    r = await client.post(f"/v1/conversations/{g}/polls", headers=a.headers,
                          json={"question": "Lunch?", "options": ["pizza", "sushi"]})
    assert r.status == 201, await r.text()
    assert (await page(client, owner, g, limit=2))["messages"][0]["message_type"] == "poll"


async def test_a_non_member_is_refused_a_cached_page_and_a_removed_member_at_once(
        chat_client: Any) -> None:
    client = await chat_client()
    owner, a, stranger = await users(client, 3)
    g = await create_group(client, owner, [a])
    await send(client, owner, g, "secret")
    path = f"/v1/conversations/{g}/messages"
    await warm(client, owner, path)
    await warm(client, a, path)
    for _ in range(2):
        r = await get_json(client, stranger, path, status=403)
        assert r["code"] == "not_a_participant"
    # refusals are never cached: once added, the next read is let in
    r = await client.post(f"/v1/conversations/{g}/participants",
                          json={"user_id": stranger.user_id}, headers=owner.headers)
    assert r.status == 201, await r.text()
    assert (await page(client, stranger, g))["messages"][0]["content"] == "secret"
    r = await client.delete(f"/v1/conversations/{g}/participants/{a.user_id}",
                            headers=owner.headers)
    assert r.status == 204
    r = await get_json(client, a, path, status=403)
    assert r["code"] == "not_a_participant"
    # and the one who leaves
    await warm(client, owner, path)
    r = await client.delete(f"/v1/conversations/{g}/participants/{owner.user_id}",
                            headers=owner.headers)
    assert r.status == 204
    await get_json(client, owner, path, status=403)


async def test_the_cache_switched_off_answers_the_same_and_never_hits(chat_client: Any) -> None:
    client = await chat_client({"cache": {"enabled": False}})
    owner, a = await users(client, 2)
    g = await create_group(client, owner, [a])
    await send(client, a, g, "hello")
    for _ in range(3):
        assert (await page(client, owner, g))["messages"][0]["content"] == "hello"
        assert g in await conversations(client, owner)
    assert hits(client, "chat.history") == hits(client, "chat.conversations") == 0
    assert len(client.app[KERNEL].read_cache) == 0


# -- across instances --------------------------------------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_db(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """One database both instances use."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/shared.db"
    return str(request.getfixturevalue("postgres_url"))


def _shared(redis_url: str, db_url: str) -> dict[str, Any]:
    return {
        "database": {"url": db_url},
        "redis": {"url": redis_url},
        "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"},
        "cache": {"ttl": 300},  # only an invalidation can explain a change within the test
    }


async def _bus_up(*clients: Any) -> None:
    await wait_for(lambda: all(c.app[KERNEL].bus.up for c in clients), timeout=10,
                   message="the Redis bus connected")


async def _two_instances(sc_client: Any, redis_server: Any, shared_db: str,
                         first_text: str) -> tuple[Any, Any, Any, Any, str]:
    """Two instances on one database and one Redis; a group of two users with one
    message sent through the first: ``(first, second, owner, member, group id)``."""
    first = await sc_client(_shared(redis_server.url, shared_db))
    second = await sc_client(_shared(redis_server.url, shared_db))
    await _bus_up(first, second)
    owner, a = await users(first, 2)
    g = await create_group(first, owner, [a], name="g")
    await send(first, a, g, first_text)
    return first, second, owner, a, g


@pytest.mark.redis
async def test_a_write_on_one_instance_shows_on_the_other_once_the_bus_delivers(
        sc_client: Any, redis_server: Any, shared_db: str) -> None:
    first, second, owner, a, g = await _two_instances(sc_client, redis_server, shared_db,
                                                      "one")
    path = f"/v1/conversations/{g}/messages"
    await warm(second, owner, "/v1/conversations")
    await warm(second, owner, path)
    r = await second.get("/v1/users/me", headers=owner.headers)
    assert r.status == 200
    await second.get("/v1/users/me", headers=owner.headers)

    await send(first, a, g, "two")
    r = await first.patch(f"/v1/conversations/{g}", json={"name": "renamed"},
                          headers=owner.headers)
    assert r.status == 200
    r = await first.patch("/v1/users/me", json={"display_name": "New Name"},
                          headers=owner.headers)
    assert r.status == 200, await r.text()

    async def page_shows() -> bool:
        return bool((await page(second, owner, g))["messages"][0]["content"] == "two")

    async def list_shows() -> bool:
        found = (await conversations(second, owner))[g]
        return bool(found["name"] == "renamed" and found["last_seq"] == 2)

    async def me_shows() -> bool:
        me = await get_json(second, owner, "/v1/users/me")
        return bool(me["display_name"] == "New Name")

    await wait_for(page_shows, timeout=5, message="the send reached instance 2's cache")
    await wait_for(list_shows, timeout=5, message="the rename reached instance 2's cache")
    await wait_for(me_shows, timeout=5, message="the profile change reached instance 2")


@pytest.mark.redis
async def test_with_redis_stopped_the_cache_is_bypassed_and_reads_stay_correct(
        sc_client: Any, redis_server: Any, shared_db: str) -> None:
    first, second, owner, a, g = await _two_instances(sc_client, redis_server, shared_db,
                                                      "before")
    path = f"/v1/conversations/{g}/messages"
    await warm(second, owner, path)

    redis_server.stop()
    await wait_for(lambda: not second.app[KERNEL].bus.up, timeout=10,
                   message="instance 2 noticed Redis is gone")
    await send(first, a, g, "during the outage")  # its invalidation cannot reach instance 2
    before = hits(second, "chat.history")
    for _ in range(3):
        assert (await page(second, owner, g))["messages"][0]["content"] == "during the outage"
    assert hits(second, "chat.history") == before  # nothing served from memory

    redis_server.start()
    await _bus_up(first, second)
    # entries made before the outage are never served again; fresh ones are
    assert (await page(second, owner, g))["messages"][0]["content"] == "during the outage"
    await warm(second, owner, path)
