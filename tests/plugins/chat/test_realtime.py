"""Realtime chat over real WebSockets: delivery, membership, removal, idempotent WS
sends, typing, presence, load (1,000 sends; 1,000 connections)."""

from __future__ import annotations

import asyncio
import json

from secureconnect.testing import wait_for

from .helpers import all_messages, create_group, send, users

TOPIC = "conversation:{}"


def kernel_of(client):
    from secureconnect.app import KERNEL

    return client.app[KERNEL]


def metric(client, name, labels=None) -> float:
    return kernel_of(client).metrics.value(name, labels)


def in_conv(cid):
    return lambda f: f.get("data", {}).get("conversation_id") == cid


async def test_member_send_reaches_every_member_socket_in_seq_order(chat_client, sc_ws):
    client = await chat_client()
    a, b, c = await users(client, 3)
    cid = await create_group(client, a, [b, c])
    sockets = [await sc_ws(client, u.access_token) for u in (a, b, b, c)]
    for i in range(5):
        await send(client, a, cid, f"m{i}")
    for ws in sockets:
        seqs = []
        for _ in range(5):
            frame = await ws.expect("chat.message", in_conv(cid))
            seqs.append(frame["data"]["seq"])
        assert seqs == [1, 2, 3, 4, 5]


async def test_non_member_cannot_subscribe_or_send_over_ws(chat_client, sc_ws):
    client = await chat_client()
    a, b, outsider = await users(client, 3)
    cid = await create_group(client, a, [b])
    spy = await sc_ws(client, outsider.access_token)
    before = metric(client, "chat_websocket_connection_unauthorized_total")
    reply = await spy.request("subscribe", {"topic": TOPIC.format(cid)})
    assert reply["type"] == "error", reply
    assert metric(client, "chat_websocket_connection_unauthorized_total") == before + 1
    reply = await spy.request("chat.send", {"conversation_id": cid, "content": "hi"})
    assert reply["type"] == "error" and reply["data"]["code"] == "not_a_participant"
    member = await sc_ws(client, b.access_token)
    await send(client, a, cid, "secret")
    await member.expect("chat.message", in_conv(cid))
    await spy.expect_nothing("chat.message")
    # a member may subscribe explicitly
    reply = await member.request("subscribe", {"topic": TOPIC.format(cid)})
    assert reply["type"] == "ack", reply


async def test_ws_send_is_idempotent_by_client_id(chat_client, sc_ws):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    sender = await sc_ws(client, a.access_token)
    listener = await sc_ws(client, b.access_token)
    data = {"conversation_id": cid, "content": "once", "message_type": "text", "client_id": "c-1"}
    # three tries in a row without waiting (a client retrying on a flaky link)
    ids = [await sender.send("chat.send", data) for _ in range(3)]
    replies = [
        await sender.expect(lambda f, i=i: f.get("id") == i and f["type"] in ("ack", "error"))
        for i in ids
    ]
    assert all(r["type"] == "ack" for r in replies), replies
    assert len({(r["data"]["id"], r["data"]["seq"]) for r in replies}) == 1
    # the same key over REST is the same message too
    again = await send(client, a, cid, "once", status=200, headers={"Idempotency-Key": "c-1"})
    assert again["id"] == replies[0]["data"]["id"]
    await listener.expect("chat.message", in_conv(cid))
    await listener.expect_nothing("chat.message")
    assert len(await all_messages(client, b, cid)) == 1


async def test_a_refused_ws_send_does_not_hold_up_the_next_ones(chat_client, sc_ws):
    """Pipelined sends: one that fails (too large, then a conversation the sender is not
    in) answers with an error and the sends behind it go through, in order."""
    client = await chat_client()
    a, b, c = await users(client, 3)
    cid = await create_group(client, a, [b])
    other = await create_group(client, c, [b])
    sender = await sc_ws(client, a.access_token)
    frames = [
        {"conversation_id": cid, "content": "first"},
        {"conversation_id": cid, "content": "x" * 20_000},
        {"conversation_id": other, "content": "not mine"},
        {"conversation_id": cid, "content": "second"},
    ]
    ids = [await sender.send("chat.send", f) for f in frames]
    replies = [
        await sender.expect(lambda f, i=i: f.get("id") == i and f["type"] in ("ack", "error"))
        for i in ids
    ]
    assert [r["type"] for r in replies] == ["ack", "error", "error", "ack"]
    assert replies[2]["data"]["code"] == "not_a_participant"
    assert [replies[0]["data"]["seq"], replies[3]["data"]["seq"]] == [1, 2]


async def test_removed_participant_receives_nothing_after_removal(chat_client, sc_ws):
    client = await chat_client()
    owner, stays, leaves = await users(client, 3)
    cid = await create_group(client, owner, [stays, leaves])
    ws_stays = await sc_ws(client, stays.access_token)
    ws_leaves = await sc_ws(client, leaves.access_token)
    await send(client, owner, cid, "before")
    await ws_leaves.expect("chat.message", lambda f: f["data"]["content"] == "before")
    r = await client.delete(
        f"/v1/conversations/{cid}/participants/{leaves.user_id}", headers=owner.headers
    )
    assert r.status == 204
    await ws_stays.expect(
        "conversation.participant_removed", lambda f: f["data"]["user_id"] == leaves.user_id
    )
    await send(client, owner, cid, "after")
    await ws_stays.expect("chat.message", lambda f: f["data"]["content"] == "after")
    await ws_leaves.expect_nothing("chat.message", within=0.5)
    await ws_leaves.expect_nothing("chat.typing", within=0.01)
    # and they cannot subscribe back or read
    reply = await ws_leaves.request("subscribe", {"topic": TOPIC.format(cid)})
    assert reply["type"] == "error"
    r = await client.get(f"/v1/conversations/{cid}/messages", headers=leaves.headers)
    assert r.status == 403


async def test_added_participant_live_socket_starts_receiving(chat_client, sc_ws):
    client = await chat_client()
    owner, newcomer = await users(client, 2)
    cid = await create_group(client, owner, [])
    ws = await sc_ws(client, newcomer.access_token)
    r = await client.post(
        f"/v1/conversations/{cid}/participants",
        json={"user_id": newcomer.user_id},
        headers=owner.headers,
    )
    assert r.status == 201
    await send(client, owner, cid, "welcome")
    frame = await ws.expect("chat.message", in_conv(cid))
    assert frame["data"]["content"] == "welcome"


async def test_typing_reaches_members_not_outsiders_and_expires(chat_client, sc_ws):
    client = await chat_client({"chat": {"typing_ttl": 0.3, "typing_throttle": 5}})
    a, b, outsider = await users(client, 3)
    cid = await create_group(client, a, [b])
    ws_a = await sc_ws(client, a.access_token)
    ws_b = await sc_ws(client, b.access_token)
    ws_out = await sc_ws(client, outsider.access_token)
    reply = await ws_a.request("chat.typing", {"conversation_id": cid, "state": "start"})
    assert reply["type"] == "ack" and reply["data"]["published"] is True
    frame = await ws_b.expect("chat.typing", in_conv(cid))
    assert frame["data"]["user_id"] == a.user_id and frame["data"]["state"] == "start"
    # throttled: a second start within typing_throttle is not published again
    reply = await ws_a.request("chat.typing", {"conversation_id": cid, "state": "start"})
    assert reply["data"]["published"] is False
    stop = await ws_b.expect("chat.typing", lambda f: f["data"]["state"] == "stop")
    assert stop["data"]["expired"] is True
    await ws_out.expect_nothing("chat.typing", within=0.2)
    reply = await ws_out.request("chat.typing", {"conversation_id": cid, "state": "start"})
    assert reply["type"] == "error" and reply["data"]["code"] == "not_a_participant"


async def test_presence_reaches_people_who_share_a_conversation(chat_client, sc_ws):
    client = await chat_client()
    a, b, outsider = await users(client, 3)
    cid = await create_group(client, a, [b])
    ws_a = await sc_ws(client, a.access_token)
    ws_out = await sc_ws(client, outsider.access_token)
    ws_b = await sc_ws(client, b.access_token)
    online = await ws_a.expect("presence.update", lambda f: f["data"]["user_id"] == b.user_id)
    assert online["data"]["status"] == "online"
    r = await client.get(f"/v1/conversations/{cid}", headers=a.headers)
    people = {p["user_id"]: p for p in (await r.json())["participants"]}
    assert people[b.user_id]["online"] is True
    await ws_b.close()
    offline = await ws_a.expect(
        "presence.update",
        lambda f: f["data"]["user_id"] == b.user_id and f["data"]["status"] == "offline",
    )
    assert offline["data"]["last_seen_at"]
    await ws_out.expect_nothing("presence.update", within=0.2)
    r = await client.get(f"/v1/conversations/{cid}", headers=a.headers)
    people = {p["user_id"]: p for p in (await r.json())["participants"]}
    assert people[b.user_id]["online"] is False and people[b.user_id]["last_seen_at"]


async def test_thousand_rapid_sends_from_ten_senders(chat_client, sc_ws):
    client = await chat_client(
        {"rate_limits": {"classes": {"chat_send": {"per_ip": "", "per_user": "100000/minute"}}}}
    )
    senders = await users(client, 10)
    (listener_user,) = await users(client, 1)
    cid = await create_group(client, senders[0], [*senders[1:], listener_user])
    listener = await sc_ws(client, listener_user.access_token)
    sockets = [await sc_ws(client, u.access_token) for u in senders]

    async def burst(ws, n: int, tag: str) -> list[dict]:
        ids = []
        for i in range(n):
            ids.append(
                await ws.send(
                    "chat.send",
                    {"conversation_id": cid, "content": f"{tag}-{i}", "client_id": f"{tag}-{i}"},
                )
            )
        return [
            await ws.expect(
                lambda f, i=i: f.get("id") == i and f["type"] in ("ack", "error"), timeout=60
            )
            for i in ids
        ]

    async def listen() -> list[int]:
        # read while the bursts run, as a live client does (it also answers pings)
        seen: list[int] = []
        while len(seen) < 1000:
            frame = await listener.expect("chat.message", in_conv(cid), timeout=60)
            seen.append(frame["data"]["seq"])
        return seen

    listening = asyncio.create_task(listen())
    replies = await asyncio.gather(*(burst(ws, 100, f"s{k}") for k, ws in enumerate(sockets)))
    acks = [r for batch in replies for r in batch]
    assert all(r["type"] == "ack" for r in acks), [r for r in acks if r["type"] != "ack"][:3]
    # a socket's sends are answered while it keeps sending, yet keep their order
    for batch in replies:
        seqs = [r["data"]["seq"] for r in batch]
        assert seqs == sorted(seqs)
    assert await listening == list(range(1, 1001))
    stored = await all_messages(client, listener_user, cid)
    assert sorted(m["seq"] for m in stored) == list(range(1, 1001))
    assert len({m["content"] for m in stored}) == 1000


async def test_thousand_clients_connect_and_disconnect_without_leaks(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    await send(client, a, cid, "warm-up")
    kernel = kernel_of(client)
    baseline = len(asyncio.all_tasks())

    async def one(i: int) -> None:
        user = a if i % 2 else b
        ws = await client.ws_connect(
            "/v1/ws", headers={"Authorization": f"Bearer {user.access_token}"}
        )
        await ws.close()

    for start in range(0, 1000, 100):
        await asyncio.gather(*(one(i) for i in range(start, start + 100)))

    await wait_for(
        lambda: len(asyncio.all_tasks()) <= baseline + 2,
        timeout=10,
        message=f"tasks back to baseline {baseline}",
    )
    assert metric(client, "chat_presence_online_connections") == 0
    for user in (a, b):
        presence = await kernel.state["chat"].presence.presence_of(user.user_id)
        assert presence["online"] is False
    # the service still works
    ws = await client.ws_connect("/v1/ws", headers={"Authorization": f"Bearer {b.access_token}"})
    await send(client, a, cid, "still alive")
    while True:
        msg = await ws.receive(timeout=5)
        frame = json.loads(msg.data)
        if frame["type"] == "chat.message":
            assert frame["data"]["content"] == "still alive"
            break
    await ws.close()
