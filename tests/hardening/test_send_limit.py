"""REST and WebSocket sends count against one per-user limit (issue 22, item 20)."""

from __future__ import annotations

from tests.plugins.chat.helpers import SQLITE_FILE, create_group, send, users


async def test_rest_and_websocket_sends_share_one_bucket(sc_client, sc_ws):
    client = await sc_client({
        "database": {"url": SQLITE_FILE},
        "rate_limits": {"classes": {"chat_send": {"per_ip": "", "per_user": "5/minute"}}},
    })
    alice, bob = await users(client, 2)
    cid = await create_group(client, alice, [bob])
    for n in range(3):
        await send(client, alice, cid, f"rest {n}")
    ws = await sc_ws(client, alice.access_token)
    replies = [await ws.request("chat.send", {"conversation_id": cid, "content": f"ws {n}"})
               for n in range(3)]
    assert [r["type"] for r in replies] == ["ack", "ack", "error"], replies
    assert replies[2]["data"]["code"] == "rate_limited"
    # and the other way round: the REST bucket is the one the socket filled
    await send(client, alice, cid, "one more", status=429)
