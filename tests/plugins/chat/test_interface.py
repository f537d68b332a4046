"""The documented interface other plugins use: kernel.require(CONVERSATIONS)."""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from secureconnect import Problem, RouteTable, hookimpl
from secureconnect.http.context import principal
from secureconnect.http.handlers import json_response
from secureconnect_plugins.chat.api import CONVERSATIONS

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
    out["participants"] = sorted(
        [p.user_id, p.role] for p in await chat.participants(cid)
    )
    out["can_moderate"] = await chat.can_moderate(me, cid)
    info = await chat.conversation(cid)
    out["conversation"] = None if info is None else [info.id, info.type, info.name]
    out["mine"] = await chat.conversations_of(me)
    message = await chat.post_message(
        cid, me, content="Lunch?", message_type="poll", metadata={"poll_id": "p1"}
    )
    out["message"] = message
    return json_response(out)


@routes.get("/v1/probe/{conversation_id}/reader/{user_id}")
async def reader(request: web.Request) -> web.StreamResponse:
    chat = _conversations(request)
    cid, user_id = request.match_info["conversation_id"], request.match_info["user_id"]
    after = int(request.query.get("after", "0"))
    limit = int(request.query.get("limit", "100"))
    found = await chat.messages(cid, after_seq=after, limit=limit)
    return json_response({
        "seqs": [m.seq for m in found],
        # texts() reads the same window as messages(), with its fields
        "as_texts": [[m.seq, m.sender_id, m.message_type, m.content, m.is_encrypted]
                     for m in found],
        "texts": [list(t) for t in await chat.texts(cid, after_seq=after, limit=limit)],
        "unread": await chat.unread_count(cid, user_id),
        "online": await chat.is_online(user_id),
        "can_moderate": await chat.can_moderate(user_id, cid),
    })


@routes.get("/v1/probe/{conversation_id}/turns")
async def turns(request: web.Request) -> web.StreamResponse:
    """A long read with a task that counts its own turns of the event loop meanwhile."""
    chat = _conversations(request)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # (the ticker starts)
    before = ticks
    read = chat.texts if request.query.get("texts") else chat.messages
    found = await read(request.match_info["conversation_id"], limit=10_000)
    during = ticks - before
    task.cancel()
    return json_response({"count": len(found), "ticks": during})


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
    assert body["participants"] == sorted([[owner.user_id, "owner"], [member.user_id, "member"]])
    assert body["can_moderate"] is True
    assert body["conversation"] == [cid, "group", "team"]
    assert body["mine"] == [cid]
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


async def test_interface_reads_messages_unread_and_presence(chat_client, sc_ws):
    client = await chat_client(plugins=[Probe()])
    owner, member = await users(client, 2)
    cid = await create_group(client, owner, [member])
    for i in range(7):
        r = await client.post(f"/v1/conversations/{cid}/messages", headers=owner.headers,
                              json={"content": f"m{i}", "message_type": "text"})
        assert r.status == 201

    async def read(**query):
        url = f"/v1/probe/{cid}/reader/{member.user_id}"
        r = await client.get(url, params={k: str(v) for k, v in query.items()},
                             headers=owner.headers)
        assert r.status == 200
        return await r.json()

    body = await read()
    assert body["seqs"] == [1, 2, 3, 4, 5, 6, 7]  # oldest first
    assert body["texts"] == body["as_texts"]
    assert body["texts"][0] == [1, owner.user_id, "text", "m0", False]
    assert body["unread"] == 7 and body["online"] is False and body["can_moderate"] is False
    assert (await read(limit=3))["seqs"] == [5, 6, 7]  # the newest, oldest first
    assert (await read(after=5))["seqs"] == [6, 7]
    assert (await read(after=2, limit=2))["seqs"] == [6, 7]
    ws = await sc_ws(client, member.access_token)
    assert (await read())["online"] is True
    await ws.close()
    # an encrypted message keeps its flag; a deleted one has no content
    r = await client.post(f"/v1/conversations/{cid}/messages", headers=member.headers,
                          json={"content": "b64:AAEC", "message_type": "text",
                                "is_encrypted": True})
    assert r.status == 201, await r.text()
    first = next(m for m in await all_messages(client, owner, cid) if m["seq"] == 1)
    r = await client.delete(f"/v1/conversations/{cid}/messages/{first['id']}",
                            headers=owner.headers)
    assert r.status in (200, 204), await r.text()
    body = await read()
    assert body["texts"] == body["as_texts"]
    assert body["texts"][0] == [1, owner.user_id, "text", None, False]
    assert body["texts"][-1] == [8, member.user_id, "text", "b64:AAEC", True]


async def test_interface_reads_long_windows_across_pages(chat_client):
    # messages() and texts() read the window in pages (interface._PAGE, _TEXT_PAGE rows
    # each) from the newest back: windows that start and end on, before and after page
    # boundaries of both
    from secureconnect_plugins.chat.interface import _PAGE, _TEXT_PAGE

    client = await chat_client({"rate_limits": {"enabled": False}}, plugins=[Probe()])
    owner, member = await users(client, 2)
    cid = await create_group(client, owner, [member])
    total = 2 * max(_PAGE, _TEXT_PAGE) + 7  # 3 pages of each at least
    for i in range(total):
        r = await client.post(f"/v1/conversations/{cid}/messages", headers=owner.headers,
                              json={"content": f"m{i}", "message_type": "text"})
        assert r.status == 201

    async def seqs(**query: int) -> list[int]:
        r = await client.get(f"/v1/probe/{cid}/reader/{member.user_id}",
                             params={k: str(v) for k, v in query.items()},
                             headers=owner.headers)
        assert r.status == 200
        body = await r.json()
        assert [t[0] for t in body["texts"]] == body["seqs"]
        return list(body["seqs"])

    def span(first: int, last: int) -> list[int]:
        return list(range(first, last + 1))

    assert await seqs(limit=1000) == span(1, total)
    for limit in (_PAGE - 1, _PAGE, _PAGE + 1, 2 * _PAGE, _TEXT_PAGE, _TEXT_PAGE + 1):
        assert await seqs(limit=limit) == span(total - limit + 1, total)
    for after in (total - _PAGE, total - _PAGE - 1, total - _TEXT_PAGE,
                  total - _TEXT_PAGE - 1, 3, 0):
        assert await seqs(after=after, limit=1000) == span(after + 1, total)
    # the limit, not after_seq, ends the window
    assert await seqs(after=5, limit=_PAGE + 3) == span(total - _PAGE - 2, total)
    assert await seqs(after=total) == []
    # the pages take turns with other work on the event loop
    for query in ({}, {"texts": "1"}):
        r = await client.get(f"/v1/probe/{cid}/turns", params=query, headers=owner.headers)
        body = await r.json()
        assert body["count"] == total and body["ticks"] >= 2  # 3 pages: 2 pauses at least
