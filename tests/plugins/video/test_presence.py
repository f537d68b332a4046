"""Reconnect grace and the stale-call reaper, over real sockets."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from plugins.video.models import calls
from secureconnect.app import KERNEL
from secureconnect.testing import wait_for

from .helpers import act, call_api, conversation, expect_event, start_call, users


def _kill(tester: Any) -> None:
    """Drop the client's TCP connection without a close handshake (a killed client)."""
    tester.ws._conn.transport.abort()


async def test_reconnect_within_grace_keeps_the_participant_and_after_it_call_left(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client({"video": {"reconnect_grace": 1.0}})
    alice, bob, carol = await users(client, 3)
    cid = await conversation(client, alice, [bob, carol])
    a = await sc_ws(client, alice.access_token)
    b = await sc_ws(client, bob.access_token)
    c = await sc_ws(client, carol.access_token)
    call_id = (await start_call(client, alice, cid))["id"]
    await act(client, bob, call_id, "join")
    await act(client, carol, call_id, "join")
    await expect_event(a, "call.joined", call_id, user_id=carol.user_id)

    # bob's socket is killed and he is back within the grace, on a new socket
    _kill(b)

    async def bob_disconnected() -> bool:
        view = await call_api(client, alice, "GET", f"/v1/calls/{call_id}")
        return any(p["user_id"] == bob.user_id and not p["connected"]
                   for p in view["participants"])
    await wait_for(bob_disconnected, timeout=3, message="bob marked disconnected")
    b = await sc_ws(client, bob.access_token)

    async def bob_back() -> bool:
        view = await call_api(client, alice, "GET", f"/v1/calls/{call_id}")
        row = next(p for p in view["participants"] if p["user_id"] == bob.user_id)
        assert row["status"] == "joined"
        return bool(row["connected"])
    await wait_for(bob_back, timeout=0.8, message="bob connected again within the grace")

    # carol closes and does not come back: call.left after the grace, not before
    gone_at = time.monotonic()
    await c.close()
    left = await expect_event(a, "call.left", call_id, timeout=5, user_id=carol.user_id)
    waited = time.monotonic() - gone_at
    assert left["reason"] == "disconnected"
    assert waited >= 0.9, waited
    await expect_event(b, "call.left", call_id, user_id=carol.user_id)
    # bob was never dropped (his grace passed long ago)
    assert not [f for f in a.seen if f["type"] == "call.left"
                and f["data"]["user_id"] == bob.user_id]
    view = await call_api(client, alice, "GET", f"/v1/calls/{call_id}")
    assert view["status"] == "active"
    assert {p["user_id"]: p["status"] for p in view["participants"]} == {
        alice.user_id: "joined", bob.user_id: "joined", carol.user_id: "left"}


async def test_a_killed_client_leaves_a_one_to_one_call_after_the_grace(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client()
    alice, bob = await users(client, 2)
    cid = await conversation(client, alice, [bob], kind="direct")
    a = await sc_ws(client, alice.access_token)
    b = await sc_ws(client, bob.access_token)
    call_id = (await start_call(client, alice, cid, "audio"))["id"]
    await act(client, bob, call_id, "join")
    await expect_event(a, "call.joined", call_id, user_id=bob.user_id)
    _kill(b)
    await expect_event(a, "call.left", call_id, timeout=5, user_id=bob.user_id,
                       reason="disconnected")
    ended = await expect_event(a, "call.ended", call_id)
    assert ended["reason"] == "stale"


async def test_the_reaper_ends_calls_left_behind_by_a_dead_instance(
        sc_client: Any, sc_ws: Any, tmp_path: Any) -> None:
    shared = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"},
        "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"},
        "video": {"reconnect_grace": 0.6, "heartbeat_interval": 0.2, "ring_timeout": 60},
    }
    doomed = await sc_client(shared)
    survivor = await sc_client({**shared, "jobs": {"enabled": True},
                                "video": {**shared["video"], "reaper_interval": 0.3}})
    alice, bob, carol = await users(doomed, 3)
    cid = await conversation(doomed, alice, [bob, carol])
    await sc_ws(doomed, alice.access_token)
    await sc_ws(doomed, bob.access_token)
    call_id = (await start_call(doomed, alice, cid))["id"]
    await act(doomed, bob, call_id, "join")
    # the instance holding every socket and timer of the call dies
    await doomed.close()

    async def ended() -> Any:
        view = await call_api(survivor, carol, "GET", f"/v1/calls/{call_id}")
        return view if view["status"] == "ended" else None
    view = await wait_for(ended, timeout=10, interval=0.1, message="the reaper ended the call")
    assert view["end_reason"] == "stale"
    assert all(p["status"] != "joined" for p in view["participants"])
    metrics = await (await survivor.get("/metrics")).text()
    assert "video_cleanup_stale_calls_total 1.0" in metrics
    assert "video_cleanup_duration_seconds_count" in metrics
    assert 'call_failures_total{reason="stale"} 1.0' in metrics
    # a new call can start in the conversation
    await start_call(survivor, carol, cid)


async def test_the_reaper_ends_calls_older_than_the_maximum_duration(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client({"jobs": {"enabled": True},
                                 "video": {"max_call_duration": 60, "reaper_interval": 0.2}})
    alice, bob = await users(client, 2)
    cid = await conversation(client, alice, [bob])
    a = await sc_ws(client, alice.access_token)
    call_id = (await start_call(client, alice, cid))["id"]
    await act(client, bob, call_id, "join")
    # the call was started 61 s ago as far as the shared database knows
    kernel = client.app[KERNEL]
    async with kernel.db.session() as s:
        started = await s.scalar(select(calls.c.created_at).where(calls.c.id == call_id))
        await s.execute(update(calls).where(calls.c.id == call_id).values(
            created_at=started - timedelta(seconds=61)))
    await expect_event(a, "call.ended", call_id, timeout=5, reason="stale")


async def test_a_seen_write_landing_after_the_disconnect_does_not_keep_the_participant(
        video_client: Any, sc_ws: Any) -> None:
    """A heartbeat reads who has sockets, then writes "seen" for them: when a socket
    closes between the two, that write lands after the disconnect's "gone". The
    participant must still leave after the grace (before: kept joined and connected
    until the stale reaper — CI saw ``call.left`` never arrive)."""
    client = await video_client({"video": {"heartbeat_interval": 0.5}})
    alice, carol = await users(client, 2)
    cid = await conversation(client, alice, [carol])
    a = await sc_ws(client, alice.access_token)
    c = await sc_ws(client, carol.access_token)
    call_id = (await start_call(client, alice, cid))["id"]
    await act(client, carol, call_id, "join")
    await expect_event(a, "call.joined", call_id, user_id=carol.user_id)
    await c.close()

    async def carol_row() -> dict[str, Any]:
        view = await call_api(client, alice, "GET", f"/v1/calls/{call_id}")
        return next(p for p in view["participants"] if p["user_id"] == carol.user_id)

    async def carol_gone() -> bool:
        return not (await carol_row())["connected"]
    await wait_for(carol_gone, timeout=3, message="carol marked disconnected")
    # the late write of a beat that began while her socket was open (what beats and
    # reconnects write through)
    presence = client.app[KERNEL].state["video"].presence
    await presence._seen([carol.user_id])
    left = await expect_event(a, "call.left", call_id, timeout=5, user_id=carol.user_id)
    assert left["reason"] == "disconnected"
    assert (await carol_row())["status"] == "left"
