"""Failure isolation: Redis really stopped → sends still succeed, persisted, delivered
to local sockets, and the publish failure is counted."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from secureconnect_plugins.chat.api import CONVERSATIONS

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
    # each failed cross-instance publish is counted by chat and by the bus beneath it
    assert metrics.value("chat_redis_publish_error_total") - errors_before >= 3
    assert metrics.value("bus_publish_errors_total") >= 3


async def test_slow_reader_loses_queued_messages_counted_and_is_told_to_resync(
    chat_client, sc_ws
):
    """A member whose socket stops reading: its queue is dropped
    (chat_client_message_dropped_total counts the chat messages in it), it gets
    `resync`, and history still has every message."""
    client = await chat_client({"ws": {"send_queue_size": 16, "slow_consumer": "resync"},
                                "rate_limits": {"enabled": False}})
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    slow = await sc_ws(client, b.access_token)
    sent = [await send(client, a, cid, "the one that was stored")]
    await slow.expect("chat.message")
    # a client that stops reading at the TCP level: the kernel's buffers fill, then the
    # server's per-socket queue. The flood goes straight through the gateway (the same
    # path chat publishes on), so it overflows fast whatever the store's speed.
    slow.ws._conn.transport.pause_reading()
    kernel = kernel_of(client)
    chat = kernel.require(CONVERSATIONS)
    metrics = kernel.metrics
    padding = "y" * 9000
    for n in range(5000):
        if metrics.value("chat_client_message_dropped_total") > 0:
            break
        await kernel.ws.publish(chat.topic(cid), "chat.message",
                                {"conversation_id": cid, "seq": 1000 + n, "content": padding})
        if n % 50 == 0:
            await asyncio.sleep(0.01)  # let the writer hit the full socket
    assert metrics.value("chat_client_message_dropped_total") > 0
    assert metrics.value("websocket_send_queue_dropped_total") >= metrics.value(
        "chat_client_message_dropped_total")
    slow.ws._conn.transport.resume_reading()
    await slow.expect("resync", lambda f: f["data"]["reason"] == "slow_consumer", timeout=20)
    assert [m["id"] for m in await all_messages(client, b, cid)] == [sent[0]["id"]]


@pytest.mark.postgres
async def test_shutdown_with_the_database_down_is_clean_and_bounded(
    sc_client, private_postgres, caplog
):
    """Activity noted while the database was up, then PostgreSQL stopped: the app shuts
    down without an error, within the writer's bound, and says once what it dropped."""
    client = await sc_client({
        "database": {"url": private_postgres.url, "acquire_timeout": 1.0,
                     "query_timeout": 1.0},
        # the first note is written at once, the next waits out the interval: pending
        "chat": {"activity_flush_interval": 10},
    })
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    await send(client, a, cid, "written at once")
    await send(client, b, cid, "still pending at shutdown")
    activity = kernel_of(client).state["chat"].activity
    assert activity._pending  # (what the shutdown must write)
    private_postgres.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(10):
        await client.close()  # raised the database error out of the app's cleanup
    assert loop.time() - started < 7  # (the last write is given 5 s at most)
    dropped = [r for r in caplog.records if "not written at shutdown" in r.getMessage()]
    assert len(dropped) == 1
    assert dropped[0].getMessage().startswith("conversation activity of 1 conversation(s)")
