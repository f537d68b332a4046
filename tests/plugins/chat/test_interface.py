"""The documented interface other plugins use: kernel.require(CONVERSATIONS)."""

from __future__ import annotations

import uuid

from aiohttp import web
from secureconnect_plugins.chat.api import CONVERSATIONS

from secureconnect import Problem, RouteTable, hookimpl
from secureconnect.http.context import principal
from secureconnect.http.handlers import json_response

from .helpers import all_messages, create_group, users

routes = RouteTable(tag="probe")


def _conversations(request: web.Request):
    from secureconnect.app import KERNEL

    return request.app[KERNEL].require(CONVERSATIONS)


@routes.post("/v1/probe/{conversation_id}")
async def probe(request: web.Request) -> web.StreamResponse:
    chat = _conversations(request)
    cid = request.match_info["conversation_id"]
    me = str(principal(request).user_id)
    out = {"is_participant": await chat.is_participant(cid, me), "topic": chat.topic(cid)}
    try:
        out["role"] = await chat.require_participant(cid, me)
    except Problem as exc:
        out["error"] = {"status": exc.status, "code": exc.code}
        return json_response(out)
    out["participants"] = sorted(await chat.participant_ids(cid))
    message = await chat.post_message(
        cid, me, content="Lunch?", message_type="poll", metadata={"poll_id": "p1"}
    )
    out["message"] = message
    return json_response(out)


class Probe:
    @hookimpl
    def sc_routes(self, kernel):
        return list(routes)


async def test_interface_for_other_plugins(chat_client, sc_ws):
    client = await chat_client(plugins=[Probe()])
    owner, member, outsider = await users(client, 3)
    cid = await create_group(client, owner, [member])
    ws = await sc_ws(client, member.access_token)
    r = await client.post(f"/v1/probe/{cid}", headers=owner.headers)
    body = await r.json()
    assert body["is_participant"] is True and body["role"] == "owner"
    assert body["topic"] == f"conversation:{cid}"
    assert body["participants"] == sorted([owner.user_id, member.user_id])
    assert body["message"]["message_type"] == "poll" and body["message"]["seq"] == 1
    frame = await ws.expect("chat.message")
    assert frame["data"]["metadata"] == {"poll_id": "p1"}
    assert [m["message_type"] for m in await all_messages(client, member, cid)] == ["poll"]
    # outsiders and unknown ids get the same 403 not_a_participant
    for target in (cid, str(uuid.uuid4())):
        r = await client.post(f"/v1/probe/{target}", headers=outsider.headers)
        body = await r.json()
        assert body["is_participant"] is False
        assert body["error"] == {"status": 403, "code": "not_a_participant"}
