"""Call lifecycles over real sockets: who gets which event, and nobody else."""

from __future__ import annotations

from typing import Any

from secureconnect.testing import wait_for

from .helpers import act, call_api, conversation, expect_event, frames, start_call, users


async def test_group_call_of_three_reaches_exactly_the_right_sockets(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client()
    alice, bob, carol, outsider = await users(client, 4)
    cid = await conversation(client, alice, [bob, carol])
    ws = {u.user_id: await sc_ws(client, u.access_token) for u in (alice, bob, carol, outsider)}
    a, b, c, o = (ws[u.user_id] for u in (alice, bob, carol, outsider))

    call = await start_call(client, alice, cid)
    call_id = call["id"]
    assert call["status"] == "ringing" and call["conversation_type"] == "group"
    assert {p["user_id"]: p["status"] for p in call["participants"]} == {
        alice.user_id: "joined", bob.user_id: "invited", carol.user_id: "invited"}
    for callee in (b, c):
        ringing = await expect_event(callee, "call.ringing", call_id)
        assert ringing["call"]["initiator_id"] == alice.user_id

    joined = await act(client, bob, call_id, "join")
    assert joined["status"] == "active"
    for sock in (a, b, c):
        await expect_event(sock, "call.joined", call_id, user_id=bob.user_id)
    await act(client, carol, call_id, "join")
    for sock in (a, b, c):
        await expect_event(sock, "call.joined", call_id, user_id=carol.user_id)

    # media state goes to the joined participants
    ack = await b.request("call.state", {"call_id": call_id, "video": False, "hand": True})
    assert ack["type"] == "ack", ack
    for sock in (a, b, c):
        state = await expect_event(sock, "call.state", call_id, user_id=bob.user_id)
        assert state["hand"] is True and state["video"] is False

    view = await call_api(client, carol, "GET", f"/v1/calls/{call_id}")
    bob_view = next(p for p in view["participants"] if p["user_id"] == bob.user_id)
    assert bob_view["hand"] is True and bob_view["connected"] is True

    # the active call of the conversation
    active = await call_api(client, bob, "GET", f"/v1/conversations/{cid}/calls/active")
    assert active["id"] == call_id

    await act(client, alice, call_id, "leave")
    for sock in (a, b, c):
        await expect_event(sock, "call.left", call_id, user_id=alice.user_id, reason="hangup")
    await act(client, bob, call_id, "leave")
    await act(client, bob, call_id, "leave")  # idempotent
    for sock in (a, b, c):
        await expect_event(sock, "call.left", call_id, user_id=bob.user_id)
    still = await call_api(client, carol, "GET", f"/v1/calls/{call_id}")
    assert still["status"] == "active"
    ended = await act(client, carol, call_id, "leave")
    assert ended["status"] == "ended" and ended["end_reason"] == "completed"
    for sock in (a, b, c):
        await expect_event(sock, "call.ended", call_id, reason="completed")

    await call_api(client, bob, "GET", f"/v1/conversations/{cid}/calls/active", 404)
    # exactly one of each event per socket; the outsider got none
    for sock in (a, b, c):
        kinds = [k for k, _ in frames(sock)]
        assert kinds.count("call.ended") == 1
        assert kinds.count("call.joined") == 2
        assert kinds.count("call.left") == 3
    assert [k for k, _ in frames(a)].count("call.ringing") == 0
    await o.expect_nothing("call.ended", within=0.2)
    assert frames(o) == []
    assert client.app is not None


async def test_outsiders_get_403_everywhere_and_unknown_calls_404(video_client: Any) -> None:
    client = await video_client()
    alice, bob, outsider = await users(client, 3)
    cid = await conversation(client, alice, [bob])
    call_id = (await start_call(client, alice, cid))["id"]
    await start_call(client, outsider, cid, status=403)
    await call_api(client, outsider, "GET", f"/v1/calls/{call_id}", 403)
    for action in ("join", "leave", "decline", "end"):
        body = await act(client, outsider, call_id, action, 403)
        assert body["code"] == "not_a_participant"
    await call_api(client, outsider, "GET", f"/v1/conversations/{cid}/calls/active", 403)
    unknown = "0192f1e4-0000-7000-8000-000000000000"
    assert (await call_api(client, alice, "GET", f"/v1/calls/{unknown}", 404))["code"] == (
        "call_not_found")
    await act(client, alice, unknown, "join", 404)
    await call_api(client, alice, "GET", "/v1/calls/not-an-id", 404)
    r = await client.post(f"/v1/conversations/{cid}/calls", json={"type": "hologram"},
                          headers=alice.headers)
    assert r.status == 422 and (await r.json())["code"] == "validation_error"


async def test_second_initiate_is_409_with_the_live_call_and_full_calls_refuse(
        video_client: Any) -> None:
    client = await video_client({"video": {"max_participants": 2}})
    alice, bob, carol = await users(client, 3)
    cid = await conversation(client, alice, [bob, carol])
    call_id = (await start_call(client, alice, cid))["id"]
    conflict = await start_call(client, bob, cid, status=409)
    assert conflict["code"] == "call_in_progress" and conflict["call_id"] == call_id
    await act(client, bob, call_id, "join")
    full = await act(client, carol, call_id, "join", 409)
    assert full["code"] == "call_full"
    await act(client, bob, call_id, "join")  # already in: harmless


async def test_end_takes_the_host_or_an_admin_and_is_idempotent(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client()
    alice, bob, carol = await users(client, 3)
    cid = await conversation(client, alice, [bob, carol])
    call_id = (await start_call(client, bob, cid))["id"]  # bob (a member) calls
    await act(client, carol, call_id, "join")
    refused = await act(client, carol, call_id, "end", 403)
    assert refused["code"] == "not_call_host"
    sock = await sc_ws(client, carol.access_token)
    ended = await act(client, alice, call_id, "end")  # alice owns the conversation
    assert ended["end_reason"] == "ended_by_host"
    await expect_event(sock, "call.ended", call_id, reason="ended_by_host")
    again = await act(client, carol, call_id, "end")
    assert again["end_reason"] == "ended_by_host"
    await act(client, bob, call_id, "leave")
    await act(client, bob, call_id, "decline")
    assert (await act(client, bob, call_id, "join", 409))["code"] == "call_ended"
    # a new call may start now
    await start_call(client, carol, cid)


async def test_direct_call_answered_then_hung_up(video_client: Any, sc_ws: Any) -> None:
    client = await video_client()
    alice, bob = await users(client, 2)
    cid = await conversation(client, alice, [bob], kind="direct")
    a = await sc_ws(client, alice.access_token)
    b = await sc_ws(client, bob.access_token)
    b2 = await sc_ws(client, bob.access_token)  # bob's second device rings too
    call_id = (await start_call(client, alice, cid, "audio"))["id"]
    await expect_event(b, "call.ringing", call_id)
    await expect_event(b2, "call.ringing", call_id)
    await act(client, bob, call_id, "join")
    for sock in (a, b, b2):
        await expect_event(sock, "call.joined", call_id, user_id=bob.user_id)
    ended = await act(client, bob, call_id, "leave")
    assert ended["status"] == "ended" and ended["end_reason"] == "completed"
    for sock in (a, b, b2):
        await expect_event(sock, "call.ended", call_id, reason="completed")
    assert [k for k, _ in frames(a)] == ["call.joined", "call.left", "call.ended"]


async def test_direct_call_declined(video_client: Any, sc_ws: Any) -> None:
    client = await video_client()
    alice, bob = await users(client, 2)
    cid = await conversation(client, alice, [bob], kind="direct")
    a = await sc_ws(client, alice.access_token)
    b = await sc_ws(client, bob.access_token)
    call_id = (await start_call(client, alice, cid, "audio"))["id"]
    await expect_event(b, "call.ringing", call_id)
    ended = await act(client, bob, call_id, "decline")
    assert ended["end_reason"] == "declined"
    for sock in (a, b):
        await expect_event(sock, "call.left", call_id, user_id=bob.user_id, reason="declined")
        await expect_event(sock, "call.ended", call_id, reason="declined")
    await act(client, bob, call_id, "decline")  # idempotent


async def test_direct_call_missed_by_ring_timeout(video_client: Any, sc_ws: Any) -> None:
    client = await video_client({"video": {"ring_timeout": 0.5}})
    alice, bob = await users(client, 2)
    cid = await conversation(client, alice, [bob], kind="direct")
    a = await sc_ws(client, alice.access_token)
    b = await sc_ws(client, bob.access_token)
    call_id = (await start_call(client, alice, cid, "audio"))["id"]
    await expect_event(b, "call.ringing", call_id)
    for sock in (a, b):  # the cancel reaches the callee's socket
        await expect_event(sock, "call.ended", call_id, timeout=5, reason="missed")
    view = await call_api(client, bob, "GET", f"/v1/calls/{call_id}")
    assert view["end_reason"] == "missed"
    assert {p["user_id"]: p["status"] for p in view["participants"]}[bob.user_id] == "missed"

    async def counted() -> bool:
        r = await client.get("/metrics")
        text = await r.text()
        return 'call_failures_total{reason="missed"} 1.0' in text
    await wait_for(counted, timeout=3, message="the missed call counted")


async def test_group_call_every_callee_declines(video_client: Any, sc_ws: Any) -> None:
    client = await video_client()
    alice, bob, carol = await users(client, 3)
    cid = await conversation(client, alice, [bob, carol])
    a = await sc_ws(client, alice.access_token)
    call_id = (await start_call(client, alice, cid, "audio"))["id"]
    still = await act(client, bob, call_id, "decline")
    assert still["status"] == "ringing"
    await expect_event(a, "call.left", call_id, user_id=bob.user_id, reason="declined")
    ended = await act(client, carol, call_id, "decline")
    assert ended["status"] == "ended" and ended["end_reason"] == "declined"
    await expect_event(a, "call.ended", call_id, reason="declined")


async def test_group_callees_who_never_answer_stop_ringing_at_the_timeout(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client({"video": {"ring_timeout": 0.5}})
    alice, bob, carol = await users(client, 3)
    cid = await conversation(client, alice, [bob, carol])
    c = await sc_ws(client, carol.access_token)
    call_id = (await start_call(client, alice, cid))["id"]
    await act(client, bob, call_id, "join")
    left = await expect_event(c, "call.left", call_id, timeout=5, user_id=carol.user_id)
    assert left["reason"] == "missed"
    view = await call_api(client, alice, "GET", f"/v1/calls/{call_id}")
    assert view["status"] == "active"  # the call goes on for those in it
    assert {p["user_id"]: p["status"] for p in view["participants"]}[carol.user_id] == "missed"
    await act(client, carol, call_id, "join")  # a late answer still gets in
    await act(client, alice, call_id, "end")
    metrics = await (await client.get("/metrics")).text()
    assert 'calls_total{type="video"} 1.0' in metrics
    assert "call_duration_seconds_count 1.0" in metrics
    assert "calls_active 0.0" in metrics
