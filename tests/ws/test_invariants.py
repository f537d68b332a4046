"""The invariants the gateway's fast path rests on, as tests over real sockets.

* A place in line is always given back: work a handler returns as ``Deferred`` always
  runs (its own clean-up runs), and the socket's deferred slot is released, whether the
  work returns, raises, times out, or the socket closes while the handler runs.
* No reordering between direct and queued writes: frames reach the client in the order
  they were published while the socket switches between the two paths.
* The event ``type`` is the first key of every frame the server sends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from secureconnect import hookimpl
from secureconnect.app import KERNEL
from secureconnect.errors import Conflict
from secureconnect.plugins import switches_without
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import register_and_login
from secureconnect.ws import Deferred
from secureconnect.ws.frames import (
    TYPE_PREFIX,
    ack_frame,
    encode,
    error_frame,
    event_type_of,
    resync_frame,
)

FAST = {"plugins": switches_without("chat")}
MAX_DEFERRED = 3


class LinePlugin:
    """A line with tickets, used the way chat uses its send line: a handler's quick part
    takes a ticket, the deferred part gives it back in ``finally``."""

    def __init__(self) -> None:
        self.outstanding = 0
        self.taken = 0
        self.gate = asyncio.Event()  # holds ``hold`` work and ``line.slow_quick``

    def take(self) -> None:
        self.outstanding += 1
        self.taken += 1

    @hookimpl
    def sc_authorize_topic(self, user: Any, topic: str) -> bool | None:
        return True if topic == "room:open" else None

    @hookimpl
    def sc_ws_handlers(self) -> dict[str, Any]:
        async def work(mode: str) -> Any:
            try:
                if mode == "raise":
                    raise RuntimeError("handler bug")
                if mode == "problem":
                    raise Conflict("refused", code="line_refused")
                if mode == "stall":
                    await asyncio.sleep(30)  # the deadline cancels it
                if mode == "hold":
                    await self.gate.wait()
                return {"mode": mode}
            finally:
                self.outstanding -= 1

        async def take(conn: Any, data: dict[str, Any]) -> Any:
            self.take()
            return Deferred(work(data["mode"]))

        async def slow_quick(conn: Any, data: dict[str, Any]) -> Any:
            self.take()
            try:
                await self.gate.wait()  # the socket may close meanwhile
            except BaseException:
                self.outstanding -= 1
                raise
            return Deferred(work("return"))

        async def ping(conn: Any, data: dict[str, Any]) -> Any:
            return {"pong": True}

        async def whisper(conn: Any, data: dict[str, Any]) -> Any:
            await conn.send("line.whisper", {"type": "not first", "id": 7})
            return None

        return {
            "line.take": take,
            "line.slow_quick": slow_quick,
            "line.ping": ping,
            "line.whisper": whisper,
        }


async def _setup(sc_client: Any, ws: dict[str, Any] | None = None) -> tuple[Any, Any, LinePlugin]:
    line = LinePlugin()
    settings = {**FAST, "ws": {"max_deferred": MAX_DEFERRED, "handler_timeout": 0.4, **(ws or {})}}
    client = await sc_client(settings, plugins=[line])
    return client, client.server.app[KERNEL], line


async def _all_slots_free(ws: Any, line: LinePlugin) -> None:
    """Fill every deferred slot with held work: the socket must still read and answer.
    With one slot lost, the last ``hold`` frame waits for a slot and ``ping`` is never
    read."""
    line.gate.clear()
    held = [await ws.send("line.take", {"mode": "hold"}) for _ in range(MAX_DEFERRED - 1)]
    answer = await ws.request("line.ping", timeout=3)
    assert answer["data"] == {"pong": True}, "a deferred slot was not released"
    line.gate.set()
    for frame_id in held:
        await ws.expect(lambda f, i=frame_id: f.get("id") == i)
    await wait_for(lambda: line.outstanding == 0, message="held tickets given back")


@pytest.mark.parametrize(
    ("mode", "answer"),
    [
        ("return", {"type": "ack", "data": {"mode": "return"}}),
        ("raise", {"type": "error", "code": "internal_error"}),
        ("problem", {"type": "error", "code": "line_refused"}),
        ("stall", {"type": "error", "code": "timeout"}),
    ],
)
async def test_deferred_work_gives_back_its_ticket_and_slot_however_it_ends(
    sc_client, sc_ws, mode, answer
):
    client, _, line = await _setup(sc_client)
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    # more frames than slots, sent at once: the later ones need the earlier ones' slots
    ids = [await ws.send("line.take", {"mode": mode}) for _ in range(2 * MAX_DEFERRED)]
    for frame_id in ids:
        frame = await ws.expect(lambda f, i=frame_id: f.get("id") == i, timeout=10)
        assert frame["type"] == answer["type"]
        if "data" in answer:
            assert frame["data"] == answer["data"]
        else:
            assert frame["data"]["code"] == answer["code"]
    assert line.taken == 2 * MAX_DEFERRED
    await wait_for(lambda: line.outstanding == 0, message="every ticket given back")
    await _all_slots_free(ws, line)


async def test_deferred_work_runs_to_its_end_when_the_client_leaves(sc_client, sc_ws):
    client, kernel, line = await _setup(sc_client)
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    for _ in range(MAX_DEFERRED - 1):
        await ws.send("line.take", {"mode": "hold"})
    await wait_for(lambda: line.outstanding == MAX_DEFERRED - 1, message="tickets taken")
    await ws.close()
    await wait_for(lambda: not kernel.ws.connections, message="socket unregistered")
    assert line.outstanding == MAX_DEFERRED - 1  # the work goes on without its socket
    line.gate.set()
    await wait_for(lambda: line.outstanding == 0, message="tickets given back")


async def test_deferred_work_starts_when_the_socket_is_closed_during_the_quick_part(
    sc_client, sc_ws
):
    """The server closes the socket (session revoked) while a handler's quick part
    holds a ticket: the Deferred it then returns still runs and gives the ticket back."""
    client, kernel, line = await _setup(sc_client)
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    await ws.send("line.slow_quick")
    await wait_for(lambda: line.outstanding == 1, message="the quick part took its ticket")
    r = await client.post("/v1/auth/logout", headers=user.headers)
    assert r.status == 204
    await wait_for(
        lambda: all(c.closing for c in kernel.ws.connections), message="socket closing"
    )
    line.gate.set()
    await wait_for(lambda: line.outstanding == 0, message="ticket given back")
    await wait_for(lambda: not kernel.ws.connections, message="socket unregistered")


async def test_a_socket_crossing_between_direct_and_queued_writes_keeps_the_order(sc_client):
    """The client stops reading until the server's socket backs up and frames take the
    queue, then reads again while events keep coming: the transport drains below
    ``ws.write_buffer_bytes`` while frames are still queued, and a frame written the
    direct way then would overtake them."""
    client, kernel, _ = await _setup(sc_client, {"write_buffer_bytes": 1024,
                                                 "send_queue_size": 1_000_000})
    user = await register_and_login(client)
    ws = await client.ws_connect("/v1/ws", headers=user.headers)
    await ws.send_str(json.dumps({"type": "subscribe", "id": "s", "data": {"topic": "room:open"}}))
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "ack"
    (conn,) = kernel.ws.connections
    pad = "z" * 4000
    sent = 0

    async def publish_batch(size: int = 10) -> None:
        nonlocal sent
        for _ in range(size):
            await kernel.ws.publish("room:open", "room.said", {"n": sent, "pad": pad})
            sent += 1
        await asyncio.sleep(0)  # a new loop round: gathered frames leave

    transport = ws._conn.transport
    assert transport is not None
    transport.pause_reading()
    async with asyncio.timeout(30):
        while conn.queued == 0:  # the kernel's buffers are full: frames take the queue
            await publish_batch()
    received: list[int] = []

    async def read() -> None:
        while True:
            msg = await ws.receive(timeout=10)
            frame = json.loads(msg.data)
            if frame["type"] == "ack":
                return
            received.append(frame["data"]["n"])

    transport.resume_reading()
    reader = asyncio.create_task(read())
    crossings = batches = 0
    async with asyncio.timeout(30):
        # keep publishing until the queue drained while events came, and a while after
        while crossings == 0 or batches < 50:
            queued_before = conn.queued
            await publish_batch()
            batches += 1
            if queued_before and not conn.queued:
                crossings += 1
    await ws.send_str(json.dumps({"type": "line.ping", "id": "last", "data": {}}))
    await asyncio.wait_for(reader, 30)
    assert received == list(range(sent))
    await ws.close()


async def test_the_type_is_the_first_key_of_every_frame(sc_client):
    """Read raw text frames of every kind the server sends: acks, errors with and
    without an id, a published event, a connection's own event."""
    client, kernel, _ = await _setup(sc_client)
    user = await register_and_login(client)
    ws = await client.ws_connect("/v1/ws", headers=user.headers)

    async def raw() -> str:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.TEXT
        text: str = msg.data
        return text

    await ws.send_str(json.dumps({"data": {"topic": "room:open"}, "id": 1, "type": "subscribe"}))
    await ws.send_str("{not json")
    await ws.send_str(json.dumps({"id": "x", "type": 5}))
    await ws.send_str(json.dumps({"type": "nope", "id": "y"}))
    await ws.send_str(json.dumps({"type": "line.take", "id": "z", "data": {"mode": "return"}}))
    await ws.send_str(json.dumps({"type": "line.whisper", "data": {}}))
    frames = [await raw() for _ in range(6)]
    await kernel.ws.publish("room:open", "room.said", {"type": "inner", "id": 3})
    await kernel.ws.publish_to_user(user.user_id, "room.direct", {})
    frames += [await raw(), await raw()]
    types = []
    for text in frames:
        assert text.startswith(TYPE_PREFIX), text
        frame = json.loads(text)
        assert next(iter(frame)) == "type", text
        assert event_type_of(text) == frame["type"]
        types.append(frame["type"])
    assert sorted(types) == sorted(
        ["ack", "error", "error", "error", "ack", "line.whisper", "room.said", "room.direct"]
    )
    await ws.close()


@pytest.mark.parametrize(
    ("text", "event_type"),
    [
        (encode("room.said", {"type": "x", "id": 1}, "f1"), "room.said"),
        (encode("room.said", None), "room.said"),
        (ack_frame({"data": 1}, 0), "ack"),
        (error_frame("bad_json", "the frame is not JSON"), "error"),
        (error_frame("timeout", "too long", "f2"), "error"),
        (resync_frame("slow_consumer", 3), "resync"),
    ],
    ids=["event-with-id", "event", "ack", "error", "error-with-id", "resync"],
)
def test_every_frame_builder_puts_the_type_first(text, event_type):
    assert text.startswith(TYPE_PREFIX)
    assert next(iter(json.loads(text))) == "type"
    assert event_type_of(text) == event_type
