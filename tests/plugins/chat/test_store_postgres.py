"""The SQL message store and conversations on PostgreSQL, black-box over HTTP:
concurrent senders get gap-free seqs, concurrent retries one message."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import all_messages, create_group, send, users


@pytest.mark.postgres
async def test_concurrent_sends_and_retries_on_postgres(sc_client, postgres_url):
    client = await sc_client({"database": {"url": postgres_url}, "rate_limits": {"enabled": False}})
    a, b, c = await users(client, 3)
    cid = await create_group(client, a, [b, c])

    async def post(user, content, key=None):
        headers = dict(user.headers)
        if key:
            headers["Idempotency-Key"] = key
        r = await client.post(
            f"/v1/conversations/{cid}/messages", json={"content": content}, headers=headers
        )
        assert r.status in (200, 201), await r.text()
        return r.status, await r.json()

    results = await asyncio.gather(
        *(post(u, f"{u.user_id[-4:]}-{i}") for i in range(20) for u in (a, b, c)),
        *(post(a, "retry", key="same") for _ in range(8)),
    )
    retries = results[60:]
    assert sorted(s for s, _ in retries) == [200] * 7 + [201]
    assert len({m["id"] for _, m in retries}) == 1
    stored = await all_messages(client, c, cid)
    assert sorted(m["seq"] for m in stored) == list(range(1, 62))
    # a direct pair created concurrently from both sides is one conversation
    rs = await asyncio.gather(
        *(
            client.post(
                "/v1/conversations",
                json={"type": "direct", "participant_ids": [y.user_id]},
                headers=x.headers,
            )
            for x, y in [(b, c), (c, b)] * 3
        )
    )
    assert len({(await r.json())["id"] for r in rs}) == 1


@pytest.mark.postgres
async def test_pipelined_sends_reach_another_instance_in_seq_order(
        sc_client, sc_ws, postgres_url, redis_server):
    """Two instances on one PostgreSQL and one Redis: a socket on A pipelines sends
    (group commits on PostgreSQL; the line moves on once A's sockets have a message);
    a member's socket on B gets every message once, in seq order, and so does one on A."""
    settings = {"database": {"url": postgres_url}, "redis": {"url": redis_server.url},
                "rate_limits": {"enabled": False},
                "auth": {"jwt_secret": "two-instances-one-deployment-" + "s" * 40}}
    client_a = await sc_client(settings)
    client_b = await sc_client(settings)
    sender, near, far = await users(client_a, 3)
    cid = await create_group(client_a, sender, [near, far])
    ws_sender = await sc_ws(client_a, sender.access_token)
    ws_near = await sc_ws(client_a, near.access_token)
    ws_far = await sc_ws(client_b, far.access_token)

    async def seqs_on(ws, n: int) -> list[int]:
        seen: list[int] = []
        while len(seen) < n:
            frame = await ws.expect(
                "chat.message", lambda f: f["data"]["conversation_id"] == cid, timeout=30)
            seen.append(frame["data"]["seq"])
        return seen

    # B's instance must hold the topic before the burst (its socket joined on connect)
    await send(client_b, far, cid, "ready")
    assert await seqs_on(ws_far, 1) == [1]
    assert await seqs_on(ws_near, 1) == [1]
    listening = [asyncio.create_task(seqs_on(ws, 200)) for ws in (ws_near, ws_far)]
    ids = [await ws_sender.send("chat.send", {"conversation_id": cid, "content": f"m{i}"})
           for i in range(200)]
    acks = [await ws_sender.expect(lambda f, i=i: f.get("id") == i, timeout=30) for i in ids]
    assert [a["type"] for a in acks] == ["ack"] * 200
    assert [a["data"]["seq"] for a in acks] == list(range(2, 202))
    near_seqs, far_seqs = await asyncio.gather(*listening)
    assert near_seqs == far_seqs == list(range(2, 202))
    stored = await all_messages(client_b, far, cid)
    assert sorted(m["seq"] for m in stored) == list(range(1, 202))
