"""The WebSocket gateway under faults and hostile frames (issue 22, items 1, 3, 6, 11,
12) — real sockets, real Redis."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import register_and_login

SECRET = {"jwt_secret": "two-instances-share-this-secret-0123456789"}


async def test_concurrent_connects_are_admitted_up_to_the_per_user_limit(sc_client):
    client = await sc_client({"ws": {"max_connections_per_user": 20}})
    user = await register_and_login(client)
    headers = {"Authorization": f"Bearer {user.access_token}"}

    async def connect() -> object:
        try:
            return await client.ws_connect("/v1/ws", headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status

    results = await asyncio.gather(*(connect() for _ in range(20)))
    refused = [r for r in results if isinstance(r, int)]
    opened = [r for r in results if not isinstance(r, int)]
    try:
        assert refused == [], f"{len(refused)} of 20 refused: {refused}"
        # the 21st is one too many
        extra = await connect()
        assert extra == 429
    finally:
        for ws in opened:
            await ws.close()


async def test_hostile_frames_get_error_frames_and_the_socket_stays_open(sc_client, sc_ws):
    client = await sc_client()
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    deep = '{"type": "ping", "id": "d", "data": {"x": ' + "[" * 2000 + "]" * 2000 + "}}"
    await ws.ws.send_str(deep)
    err = await ws.expect("error", timeout=5)
    assert err["data"]["code"] == "json_too_deep", err
    await ws.ws.send_str('{"type": "chat.send", "id": "s", "data": {"conversation_id": "x", '
                         '"content": "\\ud800"}}')
    err = await ws.expect("error", timeout=5)
    assert err["data"]["code"] == "invalid_unicode", err
    assert not ws.ws.closed
    # and it still works
    reply = await ws.request("subscribe", {"topic": f"user:{user.user_id}"})
    assert reply["type"] in ("ack", "error")


async def test_resync_counts_every_dropped_event(sc_client):
    client = await sc_client({"ws": {"send_queue_size": 8, "write_buffer_bytes": 1024,
                                     "slow_consumer": "resync"}})
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    ws = await client.ws_connect("/v1/ws", headers={
        "Authorization": f"Bearer {user.access_token}"}, max_msg_size=0)
    payload = "x" * 16384
    published = 600
    # nobody reads meanwhile: kernel buffers fill, then the send queue overflows again
    # and again
    for n in range(published):
        await kernel.ws.publish_to_user(user.user_id, "test.blob", {"n": n, "p": payload})
        if n % 50 == 0:
            await asyncio.sleep(0)
    received, told = 0, 0
    while True:
        try:
            msg = await ws.receive(timeout=2.0)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame.get("type") == "test.blob":
            received += 1
        elif frame.get("type") == "resync":
            told += int(frame["data"]["dropped"])
    await ws.close()
    assert told > 0, "the queue never overflowed: the test did not exercise resync"
    assert received + told == published, (received, told)
    assert kernel.metrics.value("websocket_send_queue_dropped_total") == told
