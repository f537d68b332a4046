"""Two instances sharing the stores: a call started on one is joined, signalled and
cut off through the other."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import FAST, act, call_api, conversation, expect_event, merge, start_call, users

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


async def _pair(sc_client: Any, database_url: str, redis_url: str) -> tuple[Any, Any]:
    shared = merge(FAST, {
        "database": {"url": database_url},
        "redis": {"url": redis_url},
        "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"},
    })
    return await sc_client(shared), await sc_client(shared)


@pytest.mark.postgres
@pytest.mark.redis
async def test_initiate_on_a_join_and_relay_through_b(
        sc_client: Any, sc_ws: Any, postgres_url: str, redis_server: Any) -> None:
    first, second = await _pair(sc_client, postgres_url, redis_server.url)
    alice, bob, carol = await users(first, 3)
    cid = await conversation(first, alice, [bob, carol])
    a = await sc_ws(first, alice.access_token)
    b = await sc_ws(second, bob.access_token)
    c = await sc_ws(second, carol.access_token)

    call_id = (await start_call(first, alice, cid))["id"]
    await expect_event(b, "call.ringing", call_id)  # rang on the other instance
    await expect_event(c, "call.ringing", call_id)
    conflict = await start_call(second, carol, cid, status=409)
    assert conflict["call_id"] == call_id
    # A has looked the call's members up (and keeps them) before bob joins through B
    early = await a.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                           "sdp": SDP})
    assert early["data"]["code"] == "not_in_call"
    await act(second, bob, call_id, "join")
    await expect_event(a, "call.joined", call_id, user_id=bob.user_id)

    # relay from a socket on A to a socket on B and back
    ack = await a.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                         "sdp": SDP})
    assert ack["type"] == "ack", ack
    assert (await expect_event(b, "call.offer", call_id))["from_user_id"] == alice.user_id
    await b.request("call.answer", {"call_id": call_id, "to_user_id": alice.user_id,
                                    "sdp": SDP})
    assert (await expect_event(a, "call.answer", call_id))["from_user_id"] == bob.user_id
    # carol (not joined) signalling through B is refused
    refused = await c.request("call.offer", {"call_id": call_id, "to_user_id": alice.user_id,
                                             "sdp": SDP})
    assert refused["data"]["code"] == "not_in_call"

    # bob moves from B to A within the grace: still in the call
    await b.close()
    b2 = await sc_ws(first, bob.access_token)
    await a.request("call.ice", {"call_id": call_id, "to_user_id": bob.user_id,
                                 "candidate": None})
    await expect_event(b2, "call.ice", call_id)
    await a.expect_nothing("call.left", within=1.5,
                           where=lambda f: f["data"].get("user_id") == bob.user_id)
    view = await call_api(second, carol, "GET", f"/v1/calls/{call_id}")
    assert {p["user_id"]: p["status"] for p in view["participants"]}[bob.user_id] == "joined"

    ended = await act(second, alice, call_id, "end")
    assert ended["end_reason"] == "ended_by_host"
    for sock in (a, b2, c):
        await expect_event(sock, "call.ended", call_id, reason="ended_by_host")


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_participant_removed_on_one_instance_is_cut_off_on_the_other(
        sc_client: Any, sc_ws: Any, postgres_url: str, redis_server: Any) -> None:
    first, second = await _pair(sc_client, postgres_url, redis_server.url)
    alice, bob, carol = await users(first, 3)
    cid = await conversation(first, alice, [bob, carol])
    a = await sc_ws(first, alice.access_token)
    c = await sc_ws(second, carol.access_token)
    call_id = (await start_call(first, alice, cid))["id"]
    await act(first, bob, call_id, "join")
    await act(second, carol, call_id, "join")
    await expect_event(a, "call.joined", call_id, user_id=carol.user_id)

    r = await first.delete(f"/v1/conversations/{cid}/participants/{carol.user_id}",
                           headers=alice.headers)
    assert r.status == 204, await r.text()
    left = await expect_event(c, "call.left", call_id, user_id=carol.user_id)
    assert left["reason"] == "removed"
    await expect_event(a, "call.left", call_id, user_id=carol.user_id, reason="removed")
    refused = await c.request("call.offer", {"call_id": call_id, "to_user_id": alice.user_id,
                                             "sdp": SDP})
    assert refused["data"]["code"] == "not_in_call"
    await call_api(second, carol, "GET", f"/v1/calls/{call_id}", 403)
    # later events of the call no longer reach her
    await act(first, bob, call_id, "leave")
    await expect_event(a, "call.left", call_id, user_id=bob.user_id)
    await c.expect_nothing("call.left", within=0.3,
                           where=lambda f: f["data"].get("user_id") == bob.user_id)
