"""Signaling relay over real sockets: only between joined participants, sender set by
the server, bad frames refused with an ``error`` frame and never relayed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from .helpers import act, call_api, conversation, expect_event, start_call, users

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize("cache_ttl", [2.0, 0])
async def test_relay_reaches_only_the_addressed_joined_participant(
        video_client: Any, sc_ws: Any, cache_ttl: float) -> None:
    client = await video_client({"video": {"membership_cache_ttl": cache_ttl}})
    alice, bob, carol, dave, outsider = await users(client, 5)
    cid = await conversation(client, alice, [bob, carol, dave])
    a, b, c, d, o = [await sc_ws(client, u.access_token)
                     for u in (alice, bob, carol, dave, outsider)]
    call_id = (await start_call(client, alice, cid))["id"]
    await act(client, bob, call_id, "join")
    await act(client, carol, call_id, "join")

    ack = await a.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                         "sdp": SDP, "from_user_id": carol.user_id})
    assert ack["type"] == "ack" and ack["data"] == {"relayed": True}
    got = await expect_event(b, "call.offer", call_id)
    assert got["from_user_id"] == alice.user_id  # server-set, the client's claim ignored
    assert got["sdp"] == SDP
    await b.request("call.answer", {"call_id": call_id, "to_user_id": alice.user_id,
                                    "sdp": SDP})
    assert (await expect_event(a, "call.answer", call_id))["from_user_id"] == bob.user_id
    cand = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 5000 typ host",
            "sdpMid": "0", "sdpMLineIndex": 0}
    await b.request("call.ice", {"call_id": call_id, "to_user_id": alice.user_id,
                                 "candidate": cand})
    ice = await expect_event(a, "call.ice", call_id)
    assert ice["candidate"]["candidate"] == cand["candidate"]
    await b.request("call.ice", {"call_id": call_id, "to_user_id": alice.user_id,
                                 "candidate": None})
    assert (await expect_event(a, "call.ice", call_id))["candidate"] is None

    # dave is invited but has not joined: neither sender nor target
    refused = await d.request("call.offer", {"call_id": call_id, "to_user_id": alice.user_id,
                                             "sdp": SDP})
    assert refused["type"] == "error" and refused["data"]["code"] == "not_in_call"
    refused = await a.request("call.offer", {"call_id": call_id, "to_user_id": dave.user_id,
                                             "sdp": SDP})
    assert refused["data"]["code"] == "not_in_call"
    # an outsider of the conversation
    refused = await o.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                             "sdp": SDP})
    assert refused["data"]["code"] == "not_in_call"
    refused = await o.request("call.state", {"call_id": call_id, "audio": False})
    assert refused["data"]["code"] == "not_in_call"
    # malformed and oversize
    for bad in ({"call_id": call_id, "to_user_id": bob.user_id},
                {"call_id": call_id, "to_user_id": bob.user_id, "sdp": "hello"},
                {"call_id": call_id, "to_user_id": "nobody", "sdp": SDP},
                {"call_id": call_id, "to_user_id": bob.user_id, "sdp": 42}):
        refused = await a.request("call.offer", bad)
        assert refused["data"]["code"] == "invalid_signal", (bad, refused)
    refused = await a.request("call.ice", {"call_id": call_id, "to_user_id": bob.user_id,
                                           "candidate": {"candidate": 1}})
    assert refused["data"]["code"] == "invalid_signal"
    refused = await a.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                             "sdp": SDP + "a=x\r\n" * 4000})
    assert refused["data"]["code"] == "too_large"
    unknown = await a.request("call.offer", {
        "call_id": "0192f1e4-0000-7000-8000-000000000000", "to_user_id": bob.user_id,
        "sdp": SDP})
    assert unknown["data"]["code"] == "call_not_found"

    # after all the refusals, exactly the relayed frames arrived, nowhere else
    await a.request("call.offer", {"call_id": call_id, "to_user_id": carol.user_id,
                                   "sdp": SDP})
    await expect_event(c, "call.offer", call_id)
    signals = ("call.offer", "call.answer", "call.ice")
    assert [f["type"] for f in b.seen if f["type"] in signals] == ["call.offer"]
    assert [f["type"] for f in c.seen if f["type"] in signals] == ["call.offer"]
    assert [f["type"] for f in a.seen if f["type"] in signals] == [
        "call.answer", "call.ice", "call.ice"]
    for sock in (d, o):
        assert not [f for f in sock.seen if f["type"] in signals]

    # once bob left, signals to him are refused
    await act(client, bob, call_id, "leave")
    refused = await a.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                             "sdp": SDP})
    assert refused["data"]["code"] == "not_in_call"


async def test_turn_credentials_verify_with_an_independent_hmac(
        video_client: Any) -> None:
    secret = "a-turn-secret-only-coturn-and-we-know"
    client = await video_client({"video": {
        "stun_urls": ["stun:stun.example.org:3478"],
        "turn_urls": ["turn:turn.example.org:3478?transport=udp"],
        "turn_ttl": 600, "turn_secret": secret}})
    (alice,) = await users(client, 1)
    before = int(time.time())
    body = await call_api(client, alice, "GET", "/v1/calls/ice-servers")
    after = int(time.time())
    assert body["ttl"] == 600
    stun, turn = body["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.org:3478"], "username": None,
                    "credential": None} or stun == {"urls": ["stun:stun.example.org:3478"]}
    assert turn["urls"] == ["turn:turn.example.org:3478?transport=udp"]
    expiry, user = turn["username"].split(":", 1)
    assert user == alice.user_id
    assert before + 600 <= int(expiry) <= after + 600
    expected = base64.b64encode(
        hmac.new(secret.encode(), turn["username"].encode(), hashlib.sha1).digest()).decode()
    assert turn["credential"] == expected
    r = await client.get("/metrics")
    assert secret not in await r.text()


async def test_ice_servers_without_turn_and_needs_a_token(video_client: Any) -> None:
    client = await video_client()
    (alice,) = await users(client, 1)
    body = await call_api(client, alice, "GET", "/v1/calls/ice-servers")
    assert body["ice_servers"] == []
    r = await client.get("/v1/calls/ice-servers")
    assert r.status == 401
