"""The chat role matrix over HTTP (issue 22, item 25): member / admin / owner x
promote, demote, add an admin, add a member, remove the owner, remove an admin,
remove a member, leave — each on a fresh group, with the outcome checked on the
group itself (a refused change leaves the roles as they were)."""

from __future__ import annotations

import json
from typing import Any

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect_plugins.chat.announcements import BUS_TOPIC
from tests.plugins.chat.helpers import SQLITE_FILE, create_group, users

# actor → action → expected status
MATRIX: dict[str, dict[str, int]] = {
    "member": {"promote": 403, "demote": 403, "add_admin": 403, "add_member": 403,
               "remove_owner": 403, "remove_admin": 403, "remove_member": 403,
               "leave": 204},
    "admin": {"promote": 403, "demote": 403, "add_admin": 403, "add_member": 201,
              "remove_owner": 403, "remove_admin": 403, "remove_member": 204,
              "leave": 204},
    "owner": {"promote": 200, "demote": 200, "add_admin": 201, "add_member": 201,
              "remove_owner": 204,  # removing oneself is leaving; ownership passes on
              "remove_admin": 204, "remove_member": 204, "leave": 204},
}


async def _roles(client: Any, cid: str, viewer: Any) -> dict[str, str]:
    r = await client.get(f"/v1/conversations/{cid}", headers=viewer.headers)
    assert r.status == 200, await r.text()
    return {p["user_id"]: p["role"] for p in (await r.json())["participants"]}


async def test_role_matrix(sc_client):
    client = await sc_client({"database": {"url": SQLITE_FILE}})
    owner, admin, admin2, member, member2, outsider = await users(client, 6)
    people = {"owner": owner, "admin": admin, "member": member}
    failures: list[str] = []
    for actor_name, row in MATRIX.items():
        for action, expected in row.items():
            actor = people[actor_name]
            cid = await create_group(client, owner, [admin, admin2, member, member2])
            base = f"/v1/conversations/{cid}/participants"
            for u in (admin, admin2):
                r = await client.patch(f"{base}/{u.user_id}", json={"role": "admin"},
                                       headers=owner.headers)
                assert r.status == 200, await r.text()
            before = await _roles(client, cid, owner)
            if action == "promote":
                r = await client.patch(f"{base}/{member2.user_id}", json={"role": "admin"},
                                       headers=actor.headers)
                changed = {member2.user_id: "admin"}
            elif action == "demote":
                r = await client.patch(f"{base}/{admin2.user_id}", json={"role": "member"},
                                       headers=actor.headers)
                changed = {admin2.user_id: "member"}
            elif action in ("add_admin", "add_member"):
                role = "admin" if action == "add_admin" else "member"
                r = await client.post(base, json={"user_id": outsider.user_id, "role": role},
                                      headers=actor.headers)
                changed = {outsider.user_id: role}
            elif action == "remove_owner":
                r = await client.delete(f"{base}/{owner.user_id}", headers=actor.headers)
                changed = {owner.user_id: None}
            elif action == "remove_admin":
                r = await client.delete(f"{base}/{admin2.user_id}", headers=actor.headers)
                changed = {admin2.user_id: None}
            elif action == "remove_member":
                r = await client.delete(f"{base}/{member2.user_id}", headers=actor.headers)
                changed = {member2.user_id: None}
            else:  # leave
                r = await client.delete(f"{base}/{actor.user_id}", headers=actor.headers)
                changed = {actor.user_id: None}
            if r.status != expected:
                failures.append(f"{actor_name} {action}: {r.status} (expected {expected})")
                continue
            viewer = member2 if member2.user_id not in changed else member
            after = await _roles(client, cid, viewer)
            if expected >= 400:
                assert (await r.json())["code"] == "admin_required", await r.text()
                if after != before:
                    failures.append(f"{actor_name} {action}: refused but roles changed")
                continue
            want = dict(before)
            for uid, role in changed.items():
                if role is None:
                    want.pop(uid, None)
                else:
                    want[uid] = role
            if owner.user_id not in want:  # the owner left: exactly one new owner
                owners = [u for u, role in after.items() if role == "owner"]
                if len(owners) != 1 or owners[0] == owner.user_id:
                    failures.append(f"{actor_name} {action}: owners after: {owners}")
                after = {u: role for u, role in after.items() if u != owners[0]} \
                    if owners else after
                want = {u: role for u, role in want.items() if u not in owners}
            if after != want:
                failures.append(f"{actor_name} {action}: roles {after} != {want}")
    assert failures == []


async def test_role_change_answer_event_and_refusals(sc_client, sc_ws):
    """What a role change says (its answer and the members' event, field by field) and
    the changes the owner may not make: its own role (the group would lose its owner),
    a non-participant's; each refusal with its code and message."""
    client = await sc_client({"database": {"url": SQLITE_FILE}})
    owner, member, outsider = await users(client, 3)
    cid = await create_group(client, owner, [member])
    base = f"/v1/conversations/{cid}/participants"
    ws = await sc_ws(client, member.access_token)
    r = await client.patch(f"{base}/{member.user_id}", json={"role": "admin"},
                           headers=owner.headers)
    assert r.status == 200, await r.text()
    expected = {"conversation_id": cid, "user_id": member.user_id, "role": "admin",
                "by": owner.user_id}
    assert await r.json() == expected
    frame = await ws.expect("conversation.updated", lambda f: f["data"].get("role") == "admin")
    assert frame["data"] == expected

    refusals = [
        (owner.user_id, 422, "invalid_role", "the owner's role is passed on by leaving"),
        (outsider.user_id, 404, "participant_not_found", "that user is not a participant"),
    ]
    for target, status, code, detail in refusals:
        r = await client.patch(f"{base}/{target}", json={"role": "member"},
                               headers=owner.headers)
        body = await r.json()
        assert (r.status, body["code"], body["detail"]) == (status, code, detail)
    r = await client.patch(f"{base}/{owner.user_id}", json={"role": "member"},
                           headers=member.headers)  # an admin, not the owner
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        403, "admin_required", "only the owner changes roles")
    assert await _roles(client, cid, owner) == {owner.user_id: "owner", member.user_id: "admin"}


async def test_group_settings_answer_event_and_refusals(sc_client, sc_ws):
    """A settings change: who may (owner and admins; never on a direct conversation,
    each refusal with code and message), what the answer says for the one who changed
    it, and the members' event, field by field."""
    client = await sc_client({"database": {"url": SQLITE_FILE}})
    owner, admin, member = await users(client, 3)
    cid = await create_group(client, owner, [admin, member])
    r = await client.patch(f"/v1/conversations/{cid}/participants/{admin.user_id}",
                           json={"role": "admin"}, headers=owner.headers)
    assert r.status == 200, await r.text()
    ws = await sc_ws(client, member.access_token)

    r = await client.patch(f"/v1/conversations/{cid}", json={"description": "plans"},
                           headers=member.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        403, "admin_required", "only the group's owner or admins change its settings")

    r = await client.patch(f"/v1/conversations/{cid}",
                           json={"name": "renamed", "description": "plans"},
                           headers=admin.headers)
    assert r.status == 200, await r.text()
    view = await r.json()
    assert (view["name"], view["description"], view["role"]) == ("renamed", "plans", "admin")
    frame = await ws.expect("conversation.updated", lambda f: f["data"].get("id") == cid)
    fields = {k: view[k] for k in ("id", "type", "name", "description", "created_by",
                                   "created_at", "updated_at", "last_message_at", "last_seq")}
    assert frame["data"] == fields

    r = await client.post("/v1/conversations", json={
        "type": "direct", "participant_ids": [member.user_id]}, headers=owner.headers)
    assert r.status in (200, 201), await r.text()
    direct = (await r.json())["id"]
    r = await client.patch(f"/v1/conversations/{direct}", json={"name": "x"},
                           headers=owner.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        422, "direct_conversation", "direct conversations have no settings to change")


async def test_participant_changes_answer_events_and_refusals(sc_client, sc_ws):
    """Adding and removing: the answer and the events (the members', and the removed
    user's own), field by field; each refusal with its code and message."""
    client = await sc_client({"database": {"url": SQLITE_FILE}})
    owner, admin, member, newcomer, outsider = await users(client, 5)
    cid = await create_group(client, owner, [admin, member])
    base = f"/v1/conversations/{cid}/participants"
    r = await client.patch(f"{base}/{admin.user_id}", json={"role": "admin"},
                           headers=owner.headers)
    assert r.status == 200, await r.text()
    ws_member = await sc_ws(client, member.access_token)

    async def refused(r: Any, status: int, code: str, detail: str) -> None:
        body = await r.json()
        assert (r.status, body["code"], body["detail"]) == (status, code, detail)

    await refused(await client.post(base, json={"user_id": newcomer.user_id},
                                    headers=member.headers),
                  403, "admin_required", "only the group's owner or admins add participants")
    await refused(await client.post(base, json={"user_id": newcomer.user_id, "role": "admin"},
                                    headers=admin.headers),
                  403, "admin_required", "only the owner makes admins; there is one owner")
    r = await client.post(base, json={"user_id": "no-such-user"}, headers=owner.headers)
    body = await r.json()
    assert (r.status, body["code"], body["user_ids"]) == (422, "unknown_users", ["no-such-user"])
    r = await client.post(base, json={"user_id": newcomer.user_id}, headers=admin.headers)
    assert r.status == 201, await r.text()
    added = {"conversation_id": cid, "user_id": newcomer.user_id, "role": "member"}
    assert await r.json() == added
    frame = await ws_member.expect("conversation.participant_added")
    assert frame["data"] == {**added, "by": admin.user_id}
    # adding again: 200, the participant as it is
    r = await client.post(base, json={"user_id": newcomer.user_id, "role": "member"},
                          headers=owner.headers)
    assert (r.status, await r.json()) == (200, added)

    ws_newcomer = await sc_ws(client, newcomer.access_token)
    await refused(await client.delete(f"{base}/{outsider.user_id}", headers=admin.headers),
                  404, "participant_not_found", "that user is not a participant")
    await refused(await client.delete(f"{base}/{newcomer.user_id}", headers=member.headers),
                  403, "admin_required", "only the group's owner or admins remove participants")
    await refused(await client.delete(f"{base}/{owner.user_id}", headers=admin.headers),
                  403, "admin_required", "admins cannot remove the owner or other admins")
    r = await client.delete(f"{base}/{newcomer.user_id}", headers=admin.headers)
    assert r.status == 204, await r.text()
    removed = {"conversation_id": cid, "user_id": newcomer.user_id, "by": admin.user_id,
               "new_owner_id": None}
    frame = await ws_newcomer.expect("conversation.participant_removed")
    assert frame["data"] == removed
    frame = await ws_member.expect("conversation.participant_removed")
    assert frame["data"] == removed

    r = await client.post("/v1/conversations", json={
        "type": "direct", "participant_ids": [member.user_id]}, headers=owner.headers)
    direct = (await r.json())["id"]
    await refused(await client.post(f"/v1/conversations/{direct}/participants",
                                    json={"user_id": newcomer.user_id}, headers=owner.headers),
                  422, "direct_conversation", "a direct conversation has exactly two participants")


async def test_participant_announcements_carry_every_field(sc_client):
    """What chat posts on ``chat:participants`` (the observers' hooks on every instance
    run from it): additions with role and actor, removals with actor, and the
    conversation's deletion once its last participant leaves. A re-add is no addition
    and answers the stored role, not the requested one."""
    client = await sc_client({"database": {"url": SQLITE_FILE}})
    kernel = client.server.app[KERNEL]
    posted: list[dict[str, Any]] = []
    sub = await kernel.bus.subscribe(
        BUS_TOPIC, lambda _topic, raw: posted.append(json.loads(raw))
    )
    try:
        owner, member, late = await users(client, 3)
        cid = await create_group(client, owner, [member])
        base = f"/v1/conversations/{cid}/participants"
        r = await client.post(base, json={"user_id": late.user_id, "role": "admin"},
                              headers=owner.headers)
        assert r.status == 201, await r.text()
        # a re-add with another role changes nothing and says so
        r = await client.post(base, json={"user_id": late.user_id, "role": "member"},
                              headers=owner.headers)
        assert r.status == 200, await r.text()
        assert (await r.json())["role"] == "admin"
        r = await client.delete(f"{base}/{member.user_id}", headers=late.headers)
        assert r.status == 204, await r.text()
        for user in (late, owner):  # everyone else leaves
            r = await client.delete(f"{base}/{user.user_id}", headers=user.headers)
            assert r.status == 204, await r.text()
        await wait_for(lambda: any(p["op"] == "deleted" for p in posted), timeout=5,
                       message="the deletion announced")
    finally:
        await sub.close()
    for p in posted:
        assert p.pop("origin")
    added = [p for p in posted if p["op"] == "added"]
    assert added[2:] == [{"op": "added", "conversation_id": cid, "user_id": late.user_id,
                          "role": "admin", "by": owner.user_id}]  # once: the re-add is none
    assert sorted(added[:2], key=lambda p: p["role"]) == [
        {"op": "added", "conversation_id": cid, "user_id": member.user_id, "role": "member",
         "by": owner.user_id},
        {"op": "added", "conversation_id": cid, "user_id": owner.user_id, "role": "owner",
         "by": owner.user_id},
    ]
    assert [p for p in posted if p["op"] != "added"] == [
        {"op": "removed", "conversation_id": cid, "user_id": member.user_id,
         "by": late.user_id},
        {"op": "removed", "conversation_id": cid, "user_id": late.user_id, "by": late.user_id},
        {"op": "removed", "conversation_id": cid, "user_id": owner.user_id,
         "by": owner.user_id},
        {"op": "deleted", "conversation_id": cid},
    ]
