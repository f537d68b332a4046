"""Creating a conversation, as the mutation run of issue 22 found it under-tested: every
refusal with its code and message, the group size limit at its boundary, what a new
group keeps (its description), the participants' live sockets (subscribed at once,
told who was added) and a direct pair created from both sides at the same moment
(one conversation, never two)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.plugins.chat.helpers import SQLITE_FILE, send, users

DB = {"database": {"url": SQLITE_FILE}}


async def _refused(r: Any, status: int, code: str, detail: str) -> None:
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (status, code, detail)


async def test_direct_refusals_say_why(sc_client):
    client = await sc_client(DB)
    a, b, c = await users(client, 3)
    two_users = "a direct conversation has exactly two users: give one other participant_id"
    for ids in ([], [a.user_id], [b.user_id, c.user_id]):
        r = await client.post("/v1/conversations", json={"type": "direct", "participant_ids": ids},
                              headers=a.headers)
        await _refused(r, 422, "invalid_participants", two_users)
    # a name, or a description, alone is enough to refuse a direct conversation
    for extra in ({"name": "us"}, {"description": "just us"}):
        r = await client.post("/v1/conversations", json={
            "type": "direct", "participant_ids": [b.user_id], **extra}, headers=a.headers)
        await _refused(r, 422, "invalid_participants",
                       "direct conversations have no name or description")
    r = await client.get("/v1/conversations", headers=a.headers)
    assert r.status == 200 and (await r.json())["conversations"] == []


async def test_group_size_limit_counts_the_creator(sc_client):
    client = await sc_client({**DB, "chat": {"max_group_members": 3}})
    owner, *others = await users(client, 4)
    r = await client.post("/v1/conversations", json={
        "type": "group", "participant_ids": [u.user_id for u in others[:2]], "name": "three"},
        headers=owner.headers)
    assert r.status == 201, await r.text()
    assert len((await r.json())["participants"]) == 3
    r = await client.post("/v1/conversations", json={
        "type": "group", "participant_ids": [u.user_id for u in others], "name": "four"},
        headers=owner.headers)
    await _refused(r, 422, "group_too_large",
                   "a group has at most 3 participants (chat.max_group_members), got 4")


async def test_new_group_keeps_its_settings_and_reaches_live_sockets(sc_client, sc_ws):
    """The members' sockets, open before the group existed, are subscribed at creation:
    they are told who was added, and receive the first message without reconnecting."""
    client = await sc_client(DB)
    owner, member = await users(client, 2)
    ws_owner = await sc_ws(client, owner.access_token)
    ws_member = await sc_ws(client, member.access_token)
    r = await client.post("/v1/conversations", json={
        "type": "group", "participant_ids": [member.user_id], "name": "plans",
        "description": "what we do next"}, headers=owner.headers)
    assert r.status == 201, await r.text()
    view = await r.json()
    cid = view["id"]
    assert (view["type"], view["name"], view["description"], view["role"], view["created_by"]) \
        == ("group", "plans", "what we do next", "owner", owner.user_id)
    r = await client.get(f"/v1/conversations/{cid}", headers=member.headers)
    assert (await r.json())["description"] == "what we do next"

    added = {"conversation_id": cid, "user_id": member.user_id, "role": "member",
             "by": owner.user_id}
    for ws in (ws_owner, ws_member):
        frame = await ws.expect("conversation.participant_added",
                                lambda f: f["data"].get("conversation_id") == cid)
        assert frame["data"] == added
    await send(client, owner, cid, "first")
    for ws in (ws_owner, ws_member):
        frame = await ws.expect("chat.message",
                                lambda f: f["data"].get("conversation_id") == cid)
        assert frame["data"]["content"] == "first"


async def test_a_direct_pair_created_from_both_sides_at_once_is_one_conversation(sc_client):
    client = await sc_client(DB)
    a, b = await users(client, 2)
    answers = await asyncio.gather(*(
        client.post("/v1/conversations",
                    json={"type": "direct", "participant_ids": [other.user_id]},
                    headers=me.headers)
        for me, other in [(a, b), (b, a)] * 6
    ))
    bodies = []
    for r in answers:
        assert r.status in (200, 201), await r.text()
        bodies.append((r.status, await r.json()))
    assert len({body["id"] for _, body in bodies}) == 1
    assert sorted(status for status, _ in bodies) == [200] * 11 + [201]
    for (_, body), me in zip(bodies, [a, b] * 6, strict=True):
        assert body["role"] == ("owner" if body["created_by"] == me.user_id else "member")
        assert {p["user_id"] for p in body["participants"]} == {a.user_id, b.user_id}
    for me in (a, b):
        r = await client.get("/v1/conversations", headers=me.headers)
        assert [c["id"] for c in (await r.json())["conversations"]] == [bodies[0][1]["id"]]


async def test_unknown_participants_are_named_within_bounds(sc_client):
    """Unknown ids: the detail names the first five, ``user_ids`` carries the first 20."""
    client = await sc_client(DB)
    (owner,) = await users(client, 1)
    unknown = [f"no-such-user-{i:02d}" for i in range(22)]
    r = await client.post("/v1/conversations", json={
        "type": "group", "participant_ids": unknown, "name": "ghosts"}, headers=owner.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"], body["user_ids"]) == (
        422, "unknown_users", "unknown user id(s): " + ", ".join(unknown[:5]), unknown[:20])


async def test_a_conversation_view_field_by_field(sc_client):
    """GET a conversation: its fields, the viewer's role and unread count, and each
    participant with role, join time, read marker and presence."""
    client = await sc_client(DB)
    owner, member = await users(client, 2)
    r = await client.post("/v1/conversations", json={
        "type": "group", "participant_ids": [member.user_id], "name": "plans"},
        headers=owner.headers)
    created = await r.json()
    cid = created["id"]
    assert created["last_message_at"] is None
    await send(client, owner, cid, "one")
    last = await send(client, owner, cid, "two")
    views = {}
    for user in (owner, member):
        r = await client.get(f"/v1/conversations/{cid}", headers=user.headers)
        assert r.status == 200, await r.text()
        views[user.user_id] = await r.json()
    for view in views.values():
        joined = {p["user_id"]: p["joined_at"] for p in view["participants"]}
        assert all(isinstance(t, str) and t.endswith("Z") for t in joined.values())
        assert sorted(view["participants"], key=lambda p: p["role"]) == [
            {"user_id": member.user_id, "role": "member", "joined_at": joined[member.user_id],
             "last_read_seq": 0, "online": False, "last_seen_at": None},
            {"user_id": owner.user_id, "role": "owner", "joined_at": joined[owner.user_id],
             "last_read_seq": 2, "online": False, "last_seen_at": None},
        ]
        assert (view["id"], view["type"], view["name"], view["last_seq"]) == (
            cid, "group", "plans", 2)
        assert (view["created_at"], view["updated_at"]) == (
            created["created_at"], created["updated_at"])
        assert view["created_at"].endswith("Z") and view["updated_at"].endswith("Z")
        assert view["last_message_at"] == last["created_at"]
    assert (views[owner.user_id]["role"], views[owner.user_id]["unread_count"]) == ("owner", 0)
    assert (views[member.user_id]["role"], views[member.user_id]["unread_count"]) == (
        "member", 2)
