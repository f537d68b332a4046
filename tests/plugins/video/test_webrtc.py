"""A real WebRTC stack (aiortc) connects a data channel through our signaling: the
offer, the answer and every ICE candidate travel over the call's WebSocket relay (the
candidates are removed from the SDPs, so the connection depends on ``call.ice``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .helpers import act, conversation, expect_event, start_call, users

aiortc = pytest.importorskip("aiortc", reason="install the `webrtc` extra")
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from aiortc.sdp import candidate_from_sdp  # noqa: E402


def _split(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """The SDP without its candidates, and the candidates as RTCIceCandidateInit."""
    lines, candidates, mid, index = [], [], None, -1
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
        if line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        if line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMid": mid, "sdpMLineIndex": index})
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        lines.append(line)
    return "\r\n".join(lines) + "\r\n", candidates


async def _send_candidates(ws: Any, call_id: str, to: str,
                           candidates: list[dict[str, Any]]) -> None:
    for cand in candidates:
        ack = await ws.request("call.ice", {"call_id": call_id, "to_user_id": to,
                                            "candidate": cand})
        assert ack["type"] == "ack", ack
    await ws.request("call.ice", {"call_id": call_id, "to_user_id": to, "candidate": None})


async def _take_candidates(ws: Any, pc: RTCPeerConnection, call_id: str) -> int:
    added = 0
    while True:
        frame = await expect_event(ws, "call.ice", call_id, timeout=10)
        init = frame["candidate"]
        if init is None:
            return added
        cand = candidate_from_sdp(init["candidate"].removeprefix("candidate:"))
        cand.sdpMid = init["sdpMid"]
        cand.sdpMLineIndex = init["sdpMLineIndex"]
        await pc.addIceCandidate(cand)
        added += 1


@pytest.mark.slow
async def test_aiortc_peers_open_a_data_channel_through_our_signaling(
        video_client: Any, sc_ws: Any) -> None:
    client = await video_client({"video": {"ring_timeout": 60}})
    alice, bob = await users(client, 2)
    cid = await conversation(client, alice, [bob], kind="direct")
    a = await sc_ws(client, alice.access_token)
    b = await sc_ws(client, bob.access_token)
    call_id = (await start_call(client, alice, cid))["id"]
    await expect_event(b, "call.ringing", call_id)
    await act(client, bob, call_id, "join")

    config = RTCConfiguration(iceServers=[])
    caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        opened = asyncio.get_running_loop().create_future()
        echoed = asyncio.get_running_loop().create_future()
        channel = caller.createDataChannel("chat")
        channel.on("open", lambda: opened.done() or opened.set_result(True))
        channel.on("message", lambda m: echoed.done() or echoed.set_result(m))

        @callee.on("datachannel")
        def on_channel(remote: Any) -> None:
            remote.on("message", lambda m: remote.send(f"echo:{m}"))

        await caller.setLocalDescription(await caller.createOffer())
        offer_sdp, offer_candidates = _split(caller.localDescription.sdp)
        assert offer_candidates, "aiortc gathered no host candidate"
        await a.request("call.offer", {"call_id": call_id, "to_user_id": bob.user_id,
                                       "sdp": offer_sdp})
        await _send_candidates(a, call_id, bob.user_id, offer_candidates)

        offer = await expect_event(b, "call.offer", call_id)
        assert offer["from_user_id"] == alice.user_id
        await callee.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        assert await _take_candidates(b, callee, call_id) == len(offer_candidates)
        await callee.setLocalDescription(await callee.createAnswer())
        answer_sdp, answer_candidates = _split(callee.localDescription.sdp)
        await b.request("call.answer", {"call_id": call_id, "to_user_id": alice.user_id,
                                        "sdp": answer_sdp})
        await _send_candidates(b, call_id, alice.user_id, answer_candidates)

        answer = await expect_event(a, "call.answer", call_id)
        await caller.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await _take_candidates(a, caller, call_id)

        await asyncio.wait_for(opened, timeout=20)
        channel.send("hello")
        assert await asyncio.wait_for(echoed, timeout=10) == "echo:hello"
    finally:
        await caller.close()
        await callee.close()
