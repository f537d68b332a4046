"""Conversations over REST: direct and group, settings, membership, roles, listing."""

from __future__ import annotations

import asyncio
import uuid

from .helpers import create_group, send, users


async def test_direct_conversation_is_unique_per_pair(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    body = {"type": "direct", "participant_ids": [b.user_id]}
    r1 = await client.post("/v1/conversations", json=body, headers=a.headers)
    assert r1.status == 201, await r1.text()
    conv = await r1.json()
    assert conv["type"] == "direct"
    assert {p["user_id"] for p in conv["participants"]} == {a.user_id, b.user_id}
    # the other side asking again gets the same conversation, concurrently too
    again = await asyncio.gather(
        *(
            client.post(
                "/v1/conversations",
                json={"type": "direct", "participant_ids": [a.user_id]},
                headers=b.headers,
            )
            for _ in range(5)
        )
    )
    for r in again:
        assert r.status == 200, await r.text()
        assert (await r.json())["id"] == conv["id"]


async def test_direct_needs_exactly_one_other_existing_user(chat_client):
    client = await chat_client()
    a, b, c = await users(client, 3)
    for ids, code in (
        ([], "invalid_participants"),
        ([b.user_id, c.user_id], "invalid_participants"),
        ([str(uuid.uuid4())], "unknown_users"),
    ):
        r = await client.post(
            "/v1/conversations", json={"type": "direct", "participant_ids": ids}, headers=a.headers
        )
        assert r.status == 422, await r.text()
        assert (await r.json())["code"] == code


async def test_requires_a_token(chat_client):
    client = await chat_client()
    r = await client.get("/v1/conversations")
    assert r.status == 401


async def test_group_settings_and_roles(chat_client):
    client = await chat_client()
    owner, admin, member, outsider = await users(client, 4)
    cid = await create_group(client, owner, [admin, member], name="team")
    r = await client.get(f"/v1/conversations/{cid}", headers=member.headers)
    conv = await r.json()
    assert conv["name"] == "team" and conv["role"] == "member"
    roles = {p["user_id"]: p["role"] for p in conv["participants"]}
    assert roles == {owner.user_id: "owner", admin.user_id: "member", member.user_id: "member"}

    # members cannot change settings; the owner promotes an admin who can
    r = await client.patch(f"/v1/conversations/{cid}", json={"name": "x"}, headers=member.headers)
    assert r.status == 403 and (await r.json())["code"] == "admin_required"
    r = await client.patch(
        f"/v1/conversations/{cid}/participants/{admin.user_id}",
        json={"role": "admin"},
        headers=owner.headers,
    )
    assert r.status == 200, await r.text()
    r = await client.patch(
        f"/v1/conversations/{cid}",
        json={"name": "renamed", "description": "our place"},
        headers=admin.headers,
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["name"] == "renamed"

    # outsiders see nothing, and unknown ids look the same (no enumeration)
    for target in (cid, str(uuid.uuid4())):
        r = await client.get(f"/v1/conversations/{target}", headers=outsider.headers)
        assert r.status == 403 and (await r.json())["code"] == "not_a_participant"
        r = await client.patch(
            f"/v1/conversations/{target}", json={"name": "pwn"}, headers=outsider.headers
        )
        assert r.status == 403


async def test_add_remove_and_leave_passes_ownership(chat_client):
    client = await chat_client({"chat": {"max_group_members": 4}})
    owner, a, b, c, d = await users(client, 5)
    cid = await create_group(client, owner, [a])
    url = f"/v1/conversations/{cid}/participants"
    # members cannot add
    r = await client.post(url, json={"user_id": b.user_id}, headers=a.headers)
    assert r.status == 403
    r = await client.post(url, json={"user_id": b.user_id}, headers=owner.headers)
    assert r.status == 201, await r.text()
    r = await client.post(url, json={"user_id": b.user_id}, headers=owner.headers)
    assert r.status == 200  # already there
    r = await client.post(url, json={"user_id": c.user_id}, headers=owner.headers)
    assert r.status == 201
    r = await client.post(url, json={"user_id": d.user_id}, headers=owner.headers)
    assert r.status == 422 and (await r.json())["code"] == "group_full"
    # a member cannot remove another; the owner can
    r = await client.delete(f"{url}/{c.user_id}", headers=a.headers)
    assert r.status == 403
    r = await client.delete(f"{url}/{c.user_id}", headers=owner.headers)
    assert r.status == 204
    # the owner leaves: the longest-standing member becomes owner
    r = await client.delete(f"{url}/{owner.user_id}", headers=owner.headers)
    assert r.status == 204
    r = await client.get(f"/v1/conversations/{cid}", headers=a.headers)
    roles = {p["user_id"]: p["role"] for p in (await r.json())["participants"]}
    assert roles == {a.user_id: "owner", b.user_id: "member"}
    r = await client.get(f"/v1/conversations/{cid}", headers=owner.headers)
    assert r.status == 403


async def test_list_orders_by_activity_with_unread_counts(chat_client):
    client = await chat_client()
    me, x, y = await users(client, 3)
    first = await create_group(client, me, [x], name="first")
    second = await create_group(client, me, [y], name="second")
    await send(client, x, first, "one")
    await send(client, x, first, "two")
    await send(client, y, second, "three")
    r = await client.get("/v1/conversations", headers=me.headers)
    listed = (await r.json())["conversations"]
    assert [c["id"] for c in listed] == [second, first]
    assert {c["id"]: c["unread_count"] for c in listed} == {first: 2, second: 1}
    last = await send(client, x, first, "four")
    r = await client.get("/v1/conversations", headers=me.headers)
    listed = (await r.json())["conversations"]
    assert listed[0]["id"] == first and listed[0]["unread_count"] == 3
    # read receipt clears it; the sender's own messages never count for them
    r = await client.post(
        f"/v1/conversations/{first}/read", json={"message_id": last["id"]}, headers=me.headers
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["unread_count"] == 0
    r = await client.get("/v1/conversations", headers=me.headers)
    mine = (await r.json())["conversations"][0]
    assert (mine["id"], mine["role"], mine["last_read_seq"]) == (first, "owner", last["seq"])
    r = await client.get("/v1/conversations", headers=x.headers)
    theirs = (await r.json())["conversations"][0]
    assert (theirs["unread_count"], theirs["role"]) == (0, "member")


async def test_deleted_account_leaves_every_conversation(chat_client):
    """sc_user_deleted: the account's memberships go (ownership passes on); the others
    keep the conversation and its history."""
    from secureconnect.app import KERNEL

    client = await chat_client()
    owner, b, c = await users(client, 3)
    group = await create_group(client, owner, [b, c])
    direct = await client.post("/v1/conversations", headers=b.headers,
                               json={"type": "direct", "participant_ids": [owner.user_id]})
    assert direct.status == 201
    await client.app[KERNEL].notify("sc_user_deleted", user={"id": owner.user_id})
    r = await client.get(f"/v1/conversations/{group}", headers=b.headers)
    assert r.status == 200
    members = {p["user_id"]: p["role"] for p in (await r.json())["participants"]}
    assert owner.user_id not in members and "owner" in members.values()
    mine = await client.get("/v1/conversations", headers=b.headers)
    assert {c["id"] for c in (await mine.json())["conversations"]} >= {group}
