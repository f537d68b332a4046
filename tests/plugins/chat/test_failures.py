"""Failure isolation: Redis really stopped → sends still succeed, persisted, delivered
to local sockets, and the publish failure is counted."""

from __future__ import annotations

import inspect

import pytest

from .helpers import all_messages, create_group, send, users


def kernel_of(client):
    from secureconnect.app import KERNEL

    return client.app[KERNEL]


async def _call(result):
    if inspect.isawaitable(result):
        return await result
    return result


@pytest.mark.redis
async def test_redis_stopped_sends_still_succeed_and_deliver_locally(
    chat_client, sc_ws, redis_server
):
    client = await chat_client({"redis": {"url": redis_server.url}})
    if not kernel_of(client).cache.shared:
        pytest.skip("the kernel does not use Redis for its cache/bus yet (stores)")
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    ws_b = await sc_ws(client, b.access_token)
    await send(client, a, cid, "with redis")
    await ws_b.expect("chat.message", lambda f: f["data"]["content"] == "with redis")
    metrics = kernel_of(client).metrics
    errors_before = metrics.value("chat_redis_publish_error_total")

    await _call(redis_server.stop())
    sent = [await send(client, a, cid, f"without redis {i}") for i in range(3)]
    assert [m["seq"] for m in sent] == [2, 3, 4]
    for i in range(3):
        frame = await ws_b.expect(
            "chat.message", lambda f, i=i: f["data"]["content"] == f"without redis {i}", timeout=10
        )
        assert frame["data"]["seq"] == i + 2
    stored = await all_messages(client, b, cid)
    assert [m["seq"] for m in stored] == [4, 3, 2, 1]
    counted = metrics.value("chat_redis_publish_error_total") - errors_before
    # the failure is visible: counted by chat, or by the gateway/bus it publishes through
    elsewhere = {
        name: metrics.value(name)
        for name in (
            "websocket_publish_errors_total",
            "bus_publish_errors_total",
            "redis_fallback_total",
        )
    }
    assert counted >= 1 or any(v >= 1 for v in elsewhere.values()), (counted, elsewhere)
