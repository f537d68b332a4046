"""The authorization matrix, generated from the mounted route table (issue 22):
every route with a conversation, message, poll, call, file or upload id in its path
(chat, polls, video, drive, ai) is called as an outsider and as a removed participant,
and must answer 403/404 without the resource's data — and change nothing. The
drive's file is shared into the conversation before the participant is removed; the
attackers also try to share it into a conversation of their own. A route with such an
id and a body that is not listed in BODIES fails the test, so a new plugin route
cannot go uncovered."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from yarl import URL

from secureconnect.http.context import ROUTES
from tests.plugins.chat.helpers import SQLITE_FILE, create_group, send, users

RESOURCE_PARAMS = {"conversation_id", "message_id", "poll_id", "call_id", "file_id",
                   "upload_id"}
SECRET = "top-secret-content-7f3a"

Ctx = dict[str, Any]
# (method, path template) → a body that is valid for that route
BODIES: dict[tuple[str, str], Callable[[Ctx], Any]] = {
    ("PATCH", "/v1/conversations/{conversation_id}"): lambda c: {"name": "pwned"},
    ("POST", "/v1/conversations/{conversation_id}/participants"):
        lambda c: {"user_id": c["attacker"]},
    ("PATCH", "/v1/conversations/{conversation_id}/participants/{user_id}"):
        lambda c: {"role": "admin"},
    ("POST", "/v1/conversations/{conversation_id}/messages"):
        lambda c: {"content": "intrusion", "message_type": "text"},
    ("PATCH", "/v1/conversations/{conversation_id}/messages/{message_id}"):
        lambda c: {"content": "edited by an intruder"},
    ("POST", "/v1/conversations/{conversation_id}/read"):
        lambda c: {"message_id": c["message_id"]},
    ("POST", "/v1/conversations/{conversation_id}/polls"):
        lambda c: {"question": "intruder?", "options": ["a", "b"]},
    ("POST", "/v1/polls/{poll_id}/votes"): lambda c: {"option_ids": [c["option_id"]]},
    ("POST", "/v1/conversations/{conversation_id}/calls"): lambda c: {"type": "audio"},
    ("POST", "/v1/drive/files/{file_id}/shares"):
        lambda c: {"conversation_id": c["own_conversation_id"]},
    ("POST", "/v1/drive/files/{file_id}/parts"): lambda c: {"part_numbers": [1]},
    ("PUT", "/v1/ai/conversations/{conversation_id}/policy"):
        lambda c: {"summary": False, "smart_replies": False},
    ("PUT", "/v1/conversations/{conversation_id}/notifications"):
        lambda c: {"muted_until": "2999-01-01T00:00:00Z"},
}
TUS = {"Tus-Resumable": "1.0.0"}
# (method, path template) → headers and raw bytes a well-formed request carries (the
# routes that read no JSON body: tus, signed blob URLs)
RAW: dict[tuple[str, str], tuple[dict[str, str], bytes | None]] = {
    ("HEAD", "/v1/drive/uploads/{upload_id}"): (TUS, None),
    ("DELETE", "/v1/drive/uploads/{upload_id}"): (TUS, None),
    ("PATCH", "/v1/drive/uploads/{upload_id}"): (
        {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        b"intruder!!"),
    ("PUT", "/v1/drive/blobs/{file_id}"): ({}, b"intrusion"),
}


def _fill(path: str, ctx: Ctx) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ctx[m.group(1)]), path)


async def _state(client: Any, ctx: Ctx, owner: Any) -> Any:
    conv = await (await client.get(f"/v1/conversations/{ctx['conversation_id']}",
                                   headers=owner.headers)).json()
    history = await (await client.get(f"/v1/conversations/{ctx['conversation_id']}/messages",
                                      headers=owner.headers)).json()
    poll = await (await client.get(f"/v1/polls/{ctx['poll_id']}",
                                   headers=owner.headers)).json()
    call = None
    if "call_id" in ctx:
        call = await (await client.get(f"/v1/calls/{ctx['call_id']}",
                                       headers=owner.headers)).json()
        call = (call.get("status"), sorted(str(p) for p in call.get("participants", [])))
    drive = None
    if "file_id" in ctx:
        file = await (await client.get(f"/v1/drive/files/{ctx['file_id']}",
                                       headers=owner.headers)).json()
        shares = await (await client.get(f"/v1/drive/files/{ctx['file_id']}/shares",
                                         headers=owner.headers)).json()
        upload = await client.head(f"/v1/drive/uploads/{ctx['upload_id']}",
                                   headers={**owner.headers, **TUS})
        drive = (file.get("name"), file.get("status"), file.get("size"),
                 sorted(s["conversation_id"] for s in shares["items"]),
                 upload.status, upload.headers.get("Upload-Offset"))
    ai = None
    r = await client.get(f"/v1/ai/conversations/{ctx['conversation_id']}/policy",
                         headers=owner.headers)
    if r.status != 404:  # the ai plugin is installed
        policy = await r.json()
        ai = (policy.get("summary"), policy.get("smart_replies"), policy.get("updated_by"))
    return (conv.get("name"), sorted((p["user_id"], p["role"]) for p in conv["participants"]),
            [(m["id"], m.get("content"), m.get("edited_at")) for m in history["messages"]],
            poll.get("total_votes"), poll.get("status"), call, drive, ai)


async def _drive_file(client: Any, owner: Any, cid: str) -> tuple[str, str] | None:
    """A ready file of ``owner`` shared into ``cid`` and a tus upload in progress
    (``None``: the drive plugin is not installed)."""
    data = SECRET.encode() * 4
    r = await client.post("/v1/drive/files", headers=owner.headers,
                          json={"name": f"{SECRET}.bin", "size": len(data),
                                "content_type": "application/octet-stream"})
    if r.status == 404:
        return None
    assert r.status == 201, await r.text()
    res = await r.json()
    url = URL(res["upload_url"])
    r = await client.put(url.path_qs, data=data)
    assert r.status == 200, await r.text()
    file_id = res["file"]["id"]
    r = await client.post(f"/v1/drive/files/{file_id}/complete", headers=owner.headers)
    assert r.status == 200, await r.text()
    r = await client.post(f"/v1/drive/files/{file_id}/shares", headers=owner.headers,
                          json={"conversation_id": cid})
    assert r.status == 201, await r.text()
    r = await client.post("/v1/drive/uploads", headers={
        **owner.headers, **TUS, "Upload-Length": "64"})
    assert r.status == 201, await r.text()
    r = await client.patch(URL(r.headers["Location"]).path, data=b"0123456789",
                           headers={**owner.headers, **TUS, "Upload-Offset": "0",
                                    "Content-Type": "application/offset+octet-stream"})
    assert r.status == 204, await r.text()
    return file_id, URL(r.url).name


async def test_outsiders_and_removed_participants_get_nothing(sc_client):
    client = await sc_client({"database": {"url": SQLITE_FILE}})
    owner, member, removed, outsider = await users(client, 4)
    cid = await create_group(client, owner, [member, removed], name="secret-room")
    drive = await _drive_file(client, owner, cid)  # shared while `removed` is a member
    own_cid = await create_group(client, outsider, [removed], name="attackers")
    r = await client.delete(f"/v1/conversations/{cid}/participants/{removed.user_id}",
                            headers=owner.headers)
    assert r.status == 204
    message = await send(client, owner, cid, SECRET)
    r = await client.post(f"/v1/conversations/{cid}/polls", headers=owner.headers,
                          json={"question": f"{SECRET}?", "options": ["yes", "no"]})
    assert r.status == 201, await r.text()
    poll = await r.json()
    ctx: Ctx = {"conversation_id": cid, "message_id": message["id"], "poll_id": poll["id"],
                "option_id": poll["options"][0]["id"], "user_id": member.user_id,
                "own_conversation_id": own_cid}
    if drive is not None:
        ctx["file_id"], ctx["upload_id"] = drive
    r = await client.post(f"/v1/conversations/{cid}/calls", json={"type": "audio"},
                          headers=owner.headers)
    if r.status != 404:  # the video plugin is installed
        assert r.status == 201, await r.text()
        ctx["call_id"] = (await r.json())["id"]
    before = await _state(client, ctx, owner)

    routes = [r for r in client.app[ROUTES]
              if RESOURCE_PARAMS & set(re.findall(r"\{(\w+)\}", r.path))]
    assert len(routes) >= 10, [r.path for r in routes]
    unlisted = [(r.method, r.path) for r in routes
                if r.body is not None and (r.method, r.path) not in BODIES]
    assert not unlisted, f"routes missing from the authorization matrix: {unlisted}"

    holes: list[str] = []
    for route in routes:
        for who, user in (("outsider", outsider), ("removed participant", removed)):
            call_ctx = {**ctx, "attacker": user.user_id}
            body = BODIES[(route.method, route.path)](call_ctx) if route.body else None
            extra, raw = RAW.get((route.method, route.path), ({}, None))
            if raw is not None:
                r = await client.request(route.method, _fill(route.path, call_ctx),
                                         data=raw, headers={**user.headers, **extra})
            else:
                r = await client.request(route.method, _fill(route.path, call_ctx),
                                         json=body, headers={**user.headers, **extra})
            text = await r.text()
            if r.status not in (403, 404):
                holes.append(f"{route.method} {route.path} as {who}: {r.status} {text[:120]}")
            elif SECRET in text or "secret-room" in text:
                holes.append(f"{route.method} {route.path} as {who}: data in the refusal")
    assert holes == []
    assert await _state(client, ctx, owner) == before
