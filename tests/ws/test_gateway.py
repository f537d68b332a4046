"""The WebSocket gateway over real sockets: auth, dispatch, topics, bounded delivery."""

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
from secureconnect.ws.gateway import Deadlines, Deferred

FAST = {"plugins": switches_without("chat")}


class RoomPlugin:
    """Allows `room:open`, refuses `room:secret`, has no opinion on anything else."""

    @hookimpl
    def sc_authorize_topic(self, user: Any, topic: str) -> bool | None:
        if topic == "room:open":
            return True
        if topic == "room:secret":
            return False
        if topic == "room:crash":
            raise RuntimeError("authorization backend down")
        return None

    @hookimpl
    def sc_ws_handlers(self) -> dict[str, Any]:
        async def echo(conn: Any, data: dict[str, Any]) -> Any:
            return {"echo": data, "user_id": conn.user_id}

        async def clash(conn: Any, data: dict[str, Any]) -> Any:
            raise Conflict("already there", code="room_conflict")

        async def crash(conn: Any, data: dict[str, Any]) -> Any:
            raise RuntimeError("handler bug")

        async def whisper(conn: Any, data: dict[str, Any]) -> Any:
            await conn.send("room.whisper", {"text": data.get("text")})
            return None

        async def stall(conn: Any, data: dict[str, Any]) -> Any:
            await asyncio.sleep(data["seconds"])  # stuck work in the quick part
            return {"woke": True}

        async def stall_later(conn: Any, data: dict[str, Any]) -> Any:
            return Deferred(stall(conn, data))  # stuck work in the deferred part

        return {
            "room.stall": stall,
            "room.stall_later": stall_later,
            "room.echo": echo,
            "room.clash": clash,
            "room.crash": crash,
            "room.whisper": whisper,
        }


async def _setup(sc_client: Any, overrides: dict[str, Any] | None = None) -> tuple[Any, Any]:
    settings = {**FAST, **(overrides or {})}
    client = await sc_client(settings, plugins=[RoomPlugin()])
    return client, client.server.app[KERNEL]


async def test_refused_without_valid_token(sc_client):
    client, kernel = await _setup(sc_client)
    r = await client.get("/v1/ws")
    assert r.status == 401
    assert r.content_type == "application/problem+json"
    assert (await r.json())["code"] == "missing_token"
    r = await client.get("/v1/ws", headers={"Authorization": "Bearer nonsense"})
    assert r.status == 401
    assert (await r.json())["code"] == "invalid_token"
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect("/v1/ws?access_token=nonsense")
    assert info.value.status == 401
    assert kernel.metrics.value("websocket_connection_unauthorized_total") == 3


async def test_expired_token_refused_and_expiry_closes_socket(sc_client):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    principal = await kernel.auth.authenticate(user.access_token)
    s = kernel.auth.settings

    def token(ttl: int) -> str:
        issued, _ = kernel.auth.keys.issue(
            issuer=s.issuer,
            audience=s.audience,
            user_id=str(principal.user_id),
            session_id=str(principal.session_id),
            role="user",
            ttl=ttl,
        )
        return issued

    r = await client.get("/v1/ws", headers={"Authorization": f"Bearer {token(-60)}"})
    assert r.status == 401
    assert (await r.json())["code"] == "token_expired"
    ws = await client.ws_connect(f"/v1/ws?access_token={token(1)}")
    msg = await ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1008


async def test_logout_closes_open_socket_and_token_is_refused(sc_client, sc_ws):
    client, _ = await _setup(sc_client)
    user = await register_and_login(client)
    other = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    survivor = await sc_ws(client, other.access_token)
    assert (await ws.request("room.echo", {"x": 1}))["type"] == "ack"
    r = await client.post("/v1/auth/logout", headers=user.headers)
    assert r.status == 204
    msg = await ws.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.ws.close_code == 1008
    r = await client.get("/v1/ws", headers=user.headers)
    assert r.status == 401
    # the other user's socket is untouched
    assert (await survivor.request("room.echo", {}))["type"] == "ack"


async def test_dispatch_answers_every_frame_with_a_stable_code(sc_client, sc_ws):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    ack = await ws.request("room.echo", {"a": [1, 2]})
    assert ack["type"] == "ack"
    assert ack["data"] == {"echo": {"a": [1, 2]}, "user_id": user.user_id}
    assert (await ws.request("nope"))["data"]["code"] == "unknown_type"
    assert (await ws.request("room.clash"))["data"]["code"] == "room_conflict"
    crash = await ws.request("room.crash")
    assert crash["data"] == {"code": "internal_error", "message": "the server failed on this frame"}
    await ws.ws.send_str("{not json")
    assert (await ws.expect("error"))["data"]["code"] == "bad_json"
    await ws.ws.send_str(json.dumps({"type": 5, "id": "x"}))
    bad = await ws.expect("error")
    assert bad["id"] == "x" and bad["data"]["code"] == "bad_envelope"
    await ws.send("room.whisper", {"text": "psst"})
    assert (await ws.expect("room.whisper"))["data"] == {"text": "psst"}
    # the loop survived all of it
    assert (await ws.request("room.echo", {}))["type"] == "ack"
    assert kernel.metrics.value("websocket_errors_total", {"code": "internal_error"}) == 1
    assert (
        kernel.metrics.value("websocket_messages_total", {"direction": "in", "type": "room.echo"})
        == 2
    )


async def test_oversized_frame_closes_1009(sc_client, sc_ws):
    client, _ = await _setup(sc_client, {"ws": {"max_frame_bytes": 1024}})
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    await ws.send("room.echo", {"blob": "x" * 2000})
    msg = await ws.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.ws.close_code == 1009


async def test_inbound_rate_limit_answers_rate_limited(sc_client, sc_ws):
    client, _ = await _setup(sc_client, {"ws": {"inbound_rate": 1, "inbound_burst": 3}})
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    answers = [await ws.request("room.echo", {}) for _ in range(5)]
    assert [a["type"] for a in answers[:3]] == ["ack"] * 3
    assert answers[4]["data"]["code"] == "rate_limited"


async def test_subscribe_is_denied_by_default(sc_client, sc_ws):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    other = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    for topic in ("room:secret", "room:unknown", "room:crash", f"user:{other.user_id}"):
        answer = await ws.request("subscribe", {"topic": topic})
        assert answer["type"] == "error", topic
        assert answer["data"]["code"] == "topic_forbidden"
        await kernel.ws.publish(topic, "room.said", {"topic": topic})
    assert (await ws.request("subscribe", {"topic": "room:open"}))["type"] == "ack"
    await kernel.ws.publish("room:open", "room.said", {"topic": "room:open"})
    assert (await ws.expect("room.said"))["data"] == {"topic": "room:open"}
    await ws.expect_nothing("room.said")
    assert (await ws.request("unsubscribe", {"topic": "room:open"}))["type"] == "ack"
    await kernel.ws.publish("room:open", "room.said", {"n": 2})
    await kernel.ws.publish(f"user:{user.user_id}", "room.direct", {})
    await ws.expect("room.direct")
    await ws.expect_nothing("room.said")


async def test_add_and_remove_user_from_topic_live(sc_client, sc_ws):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    first, second = await sc_ws(client, user.access_token), await sc_ws(client, user.access_token)
    await wait_for(lambda: len(kernel.ws.connections) == 2)
    await kernel.ws.add_user_to_topic(user.user_id, "team:1")
    await kernel.ws.publish("team:1", "team.news", {"n": 1})
    assert (await first.expect("team.news"))["data"] == {"n": 1}
    assert (await second.expect("team.news"))["data"] == {"n": 1}
    await kernel.ws.remove_user_from_topic(user.user_id, "team:1")
    await kernel.ws.publish("team:1", "team.news", {"n": 2})
    await kernel.ws.publish(f"user:{user.user_id}", "marker", {})
    await first.expect("marker")
    await first.expect_nothing("team.news")
    assert "team:1" not in kernel.bus.topics()


async def test_connection_limits_and_origin(sc_client, sc_ws):
    client, kernel = await _setup(
        sc_client,
        {
            "ws": {"max_connections_per_user": 2, "max_connections": 3},
            "cors": {"allow_origins": ["https://app.example"]},
        },
    )
    alice, bob = await register_and_login(client), await register_and_login(client)
    await sc_ws(client, alice.access_token)
    await sc_ws(client, alice.access_token)
    r = await client.get("/v1/ws", headers=alice.headers)
    assert r.status == 429
    assert (await r.json())["code"] == "too_many_connections"
    await sc_ws(client, bob.access_token)
    r = await client.get("/v1/ws", headers=bob.headers)
    assert r.status == 503
    assert (
        kernel.metrics.value("websocket_connections_refused_total", {"reason": "user_limit"}) == 1
    )
    assert kernel.metrics.value("websocket_connections", {"transport": "ws"}) == 3
    r = await client.get("/v1/ws", headers={**bob.headers, "Origin": "https://evil.example"})
    assert r.status == 403
    assert (await r.json())["code"] == "origin_forbidden"


async def test_allowed_origin_connects(sc_client):
    client, _ = await _setup(sc_client, {"cors": {"allow_origins": ["https://app.example"]}})
    user = await register_and_login(client)
    ws = await client.ws_connect(
        "/v1/ws", headers={**user.headers, "Origin": "https://app.example"}
    )
    await ws.send_str(json.dumps({"type": "room.echo", "id": "1"}))
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "ack"
    await ws.close()


async def test_shutdown_closes_sockets_with_going_away(sc_client, sc_ws):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    await ws.request("room.echo", {})
    await kernel.ws.shutdown()
    msg = await ws.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert ws.ws.close_code == 1001


@pytest.mark.parametrize("policy", ["resync", "close"])
async def test_slow_consumer_is_cut_loose_and_healthy_socket_gets_everything(
    sc_client, sc_ws, policy
):
    total, payload = 10_000, "x" * 2048
    queue_size = 128
    client, kernel = await _setup(
        sc_client, {"ws": {"send_queue_size": queue_size, "slow_consumer": policy}}
    )
    user = await register_and_login(client)
    healthy = await client.ws_connect("/v1/ws", headers=user.headers)
    slow = await client.ws_connect("/v1/ws", headers=user.headers)
    for sock in (healthy, slow):
        await sock.send_str(
            json.dumps({"type": "subscribe", "id": "s", "data": {"topic": "room:open"}})
        )
        assert json.loads((await sock.receive(timeout=5)).data)["type"] == "ack"
    received: list[int] = []

    async def read_healthy() -> None:
        while len(received) < total:
            msg = await healthy.receive(timeout=10)
            frame = json.loads(msg.data)
            if frame["type"] == "room.said":
                received.append(frame["data"]["n"])

    reader = asyncio.create_task(read_healthy())
    peak = 0
    for n in range(total):
        await kernel.ws.publish("room:open", "room.said", {"n": n, "pad": payload})
        # a healthy consumer keeps up: the publisher never runs far ahead of it
        while n - len(received) > queue_size // 2:  # noqa: ASYNC110 (polls a counter)
            await asyncio.sleep(0.001)
        peak = max(peak, max(c.queued for c in kernel.ws.connections))
    await asyncio.wait_for(reader, 10)
    assert received == list(range(total))
    assert peak <= queue_size
    assert kernel.metrics.value("websocket_send_queue_dropped_total") > 0
    # the slow socket, reading at last, learns it missed events
    got_resync = False
    while True:
        msg = await slow.receive(timeout=5)
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        if json.loads(msg.data)["type"] == "resync":
            got_resync = True
            break
    if policy == "resync":
        assert got_resync
    else:
        assert slow.close_code == 1013
    await healthy.close()
    await slow.close()


async def test_connect_disconnect_cycles_leave_no_tasks_or_topics(sc_client):
    client, kernel = await _setup(sc_client, {"ws": {"max_connections_per_user": 100}})
    user = await register_and_login(client)

    async def cycle() -> None:
        ws = await client.ws_connect("/v1/ws", headers=user.headers)
        await ws.close()

    await cycle()
    await wait_for(lambda: not kernel.ws.connections)
    base_tasks, base_topics = len(asyncio.all_tasks()), sorted(kernel.bus.topics())
    for _ in range(2000 // 50):
        await asyncio.gather(*(cycle() for _ in range(50)))
    await wait_for(lambda: not kernel.ws.connections, message="connections closed")
    await wait_for(
        lambda: len(asyncio.all_tasks()) <= base_tasks, message=f"tasks back to {base_tasks}"
    )
    assert sorted(kernel.bus.topics()) == base_topics
    assert kernel.ws.topic_count() == 0
    assert kernel.metrics.value("websocket_connections", {"transport": "ws"}) == 0


async def test_sse_receives_the_same_events(sc_client, sc_ws):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    r = await client.get("/v1/events?topic=room:secret", headers=user.headers)
    assert r.status == 403
    ws = await sc_ws(client, user.access_token)
    await ws.request("subscribe", {"topic": "room:open"})
    stream = await client.get(f"/v1/events?topic=room:open&access_token={user.access_token}")
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    await wait_for(lambda: len(kernel.ws.connections) == 2)
    for n in range(3):
        await kernel.ws.publish("room:open", "room.said", {"n": n})
    await kernel.ws.publish(f"user:{user.user_id}", "room.direct", {"n": 9})
    over_ws = [await ws.expect("room.said") for _ in range(3)] + [await ws.expect("room.direct")]
    over_sse: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(over_sse) < 4:
            line = (await stream.content.readline()).decode().strip()
            if line.startswith("data: "):
                over_sse.append(json.loads(line[6:]))
    assert over_sse == over_ws
    stream.close()
    await wait_for(lambda: len(kernel.ws.connections) == 1, message="SSE connection released")


async def test_two_instances_share_events_through_redis(sc_client, sc_ws, redis_server):
    from secureconnect.store.bus import RedisBus

    overrides = {**FAST, "redis": {"url": redis_server.url}}
    client_a, kernel_a = await _setup(sc_client, overrides)
    assert isinstance(kernel_a.bus, RedisBus)
    _, kernel_b = await _setup(sc_client, overrides)
    user = await register_and_login(client_a)
    ws = await sc_ws(client_a, user.access_token)
    await ws.request("subscribe", {"topic": "room:open"})
    await kernel_b.ws.publish("room:open", "room.said", {"from": "b"})
    assert (await ws.expect("room.said", timeout=5))["data"] == {"from": "b"}
    await kernel_b.ws.add_user_to_topic(user.user_id, "team:x")
    await wait_for(lambda: "team:x" in kernel_a.bus.topics())
    await kernel_b.ws.publish("team:x", "team.news", {})
    await ws.expect("team.news", timeout=5)


async def test_two_gateways_on_one_bus_deliver_and_control_across(aiohttp_client, sc_app, sc_ws):
    """The cross-instance path without Redis: two apps whose kernels share one bus."""
    app_a = sc_app(FAST, plugins=[RoomPlugin()])
    app_b = sc_app(FAST, plugins=[RoomPlugin()])
    kernel_a, kernel_b = app_a[KERNEL], app_b[KERNEL]
    kernel_b.bus = kernel_a.bus
    client_a = await aiohttp_client(app_a)
    await aiohttp_client(app_b)
    user = await register_and_login(client_a)
    ws = await sc_ws(client_a, user.access_token)
    await ws.request("subscribe", {"topic": "room:open"})
    await kernel_b.ws.publish("room:open", "room.said", {"from": "b"})
    assert (await ws.expect("room.said"))["data"] == {"from": "b"}
    await kernel_b.ws.add_user_to_topic(user.user_id, "team:y")
    # another instance applies control messages asynchronously: wait until it did
    await wait_for(lambda: "team:y" in kernel_a.bus.topics())
    await kernel_b.ws.publish("team:y", "team.news", {"n": 1})
    await ws.expect("team.news")
    await kernel_b.ws.remove_user_from_topic(user.user_id, "team:y")
    await wait_for(lambda: "team:y" not in kernel_a.bus.topics())
    await kernel_b.ws.publish("team:y", "team.news", {"n": 2})
    await kernel_b.ws.publish(f"user:{user.user_id}", "marker", {})
    await ws.expect("marker")
    await ws.expect_nothing("team.news")
    assert list(kernel_a.bus.topics()).count("room:open") == 1


async def test_unresponsive_socket_is_closed_by_heartbeat(sc_client):
    client, kernel = await _setup(sc_client, {"ws": {"heartbeat": 0.3}})
    user = await register_and_login(client)
    await client.ws_connect("/v1/ws", headers=user.headers, autoping=False)
    await wait_for(lambda: len(kernel.ws.connections) == 1)
    await wait_for(lambda: not kernel.ws.connections, message="heartbeat closed the socket")


async def test_logout_ends_event_stream(sc_client):
    client, kernel = await _setup(sc_client)
    user = await register_and_login(client)
    stream = await client.get("/v1/events", headers=user.headers)
    assert stream.status == 200
    await wait_for(lambda: len(kernel.ws.connections) == 1)
    r = await client.post("/v1/auth/logout", headers=user.headers)
    assert r.status == 204
    async with asyncio.timeout(5):
        while await stream.content.readline():
            pass
    await wait_for(lambda: not kernel.ws.connections)


class SlowLobbyPlugin:
    """Subscribes every new socket to `lobby` after a slow look-up, as chat does with
    its database query on connect."""

    @hookimpl
    async def sc_ws_connected(self, conn: Any) -> None:
        await asyncio.sleep(0.3)
        await conn.subscribe("lobby")


async def test_topics_joined_on_connect_are_live_when_the_upgrade_answers(sc_client, sc_ws):
    """A client may send or expect events as soon as its upgrade is answered: whatever
    the plugins subscribe on connect is in place by then, however slowly they work."""
    client = await sc_client(FAST, plugins=[SlowLobbyPlugin()])
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    await kernel.ws.publish("lobby", "lobby.news", {"n": 1})
    assert (await ws.expect("lobby.news", timeout=2))["data"] == {"n": 1}


@pytest.mark.parametrize("compress", [0, 15], ids=["plain", "permessage-deflate"])
async def test_a_burst_arrives_whole_and_in_order_across_direct_and_queued_writes(
    sc_client, compress
):
    # A small write buffer makes frames switch between the direct path (gathered and
    # written once per loop round) and the send queue many times during the burst;
    # with permessage-deflate every frame takes the queue (aiohttp compresses it).
    total = 3000
    client, kernel = await _setup(
        sc_client, {"ws": {"write_buffer_bytes": 2048, "send_queue_size": total + 10}}
    )
    user = await register_and_login(client)
    ws = await client.ws_connect("/v1/ws", headers=user.headers, compress=compress)
    assert ws.compress == compress
    await ws.send_str(json.dumps({"type": "subscribe", "id": "s", "data": {"topic": "room:open"}}))
    assert json.loads((await ws.receive(timeout=5)).data)["type"] == "ack"
    for n in range(total):  # one loop round: the in-process bus never suspends
        await kernel.ws.publish("room:open", "room.said", {"n": n, "pad": "y" * 200})
    await ws.send_str(json.dumps({"type": "room.echo", "id": "last", "data": {}}))
    received = []
    while True:
        frame = json.loads((await ws.receive(timeout=10)).data)
        if frame["type"] == "ack":
            assert frame["id"] == "last"  # queued behind the burst, not ahead of it
            break
        received.append(frame["data"]["n"])
    assert received == list(range(total))
    assert kernel.metrics.value(
        "websocket_messages_total", {"direction": "out", "type": "room.said"}
    ) == total
    await ws.close()


async def test_stuck_handlers_get_a_timeout_and_the_socket_carries_on(sc_client, sc_ws):
    client, kernel = await _setup(sc_client, {"ws": {"handler_timeout": 0.4}})
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    loop = asyncio.get_running_loop()
    for event_type in ("room.stall", "room.stall_later"):
        started = loop.time()
        answer = await ws.request(event_type, {"seconds": 30}, timeout=5)
        assert answer["type"] == "error"
        assert answer["data"] == {"code": "timeout", "message": "the handler took too long"}
        # the deadline, at most a quarter of it late (plus a loaded box's slack)
        assert 0.4 <= loop.time() - started < 2.5
    # work that finishes in time is answered as usual, and the socket still reads
    assert (await ws.request("room.stall", {"seconds": 0.05}))["data"] == {"woke": True}
    assert (await ws.request("room.stall_later", {"seconds": 0.05}))["data"] == {"woke": True}
    assert (await ws.request("room.echo", {"x": 1}))["data"]["echo"] == {"x": 1}
    assert kernel.metrics.value("websocket_errors_total", {"code": "timeout"}) == 2


async def test_deadlines_tell_their_own_cancellation_from_anyone_elses():
    deadlines = Deadlines(0.2)
    outcome: dict[str, Any] = {}

    async def guarded(name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        cancelling = deadlines.enter(task)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome[name] = deadlines.leave(task, cancelling)
            if not outcome[name]:
                raise
            return
        deadlines.leave(task, cancelling)

    late = asyncio.create_task(guarded("late"))
    stopped = asyncio.create_task(guarded("stopped"))
    await asyncio.sleep(0)
    stopped.cancel()  # somebody else's cancellation passes through untouched
    with pytest.raises(asyncio.CancelledError):
        await stopped
    await asyncio.wait_for(late, timeout=3)  # the deadline's is the task's own to handle
    assert outcome == {"stopped": False, "late": True}
    assert not late.cancelled() and late.cancelling() == 0
    deadlines.close()


def test_public_names_stay_importable_from_the_gateway_module_and_the_package():
    import secureconnect.ws as package
    import secureconnect.ws.gateway as gateway

    names = {
        "Gateway", "GatewayConfig", "Connection", "WsConnection", "SseConnection",
        "WsHandler", "Deferred", "Deadlines", "encode", "text_frame", "CONTROL_TOPIC",
        "USER_TOPIC_PREFIX", "CLOSE_NORMAL", "CLOSE_GOING_AWAY", "CLOSE_POLICY",
        "CLOSE_TOO_BIG", "CLOSE_INTERNAL", "CLOSE_TRY_AGAIN_LATER",
    }
    assert names <= set(gateway.__all__) == set(package.__all__)
    for name in names:
        assert getattr(package, name) is getattr(gateway, name), name
