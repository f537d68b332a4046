"""Sharing into conversations: participants may download, outsiders may not, and a
removed participant loses access at once (membership is asked live)."""

from __future__ import annotations

import os
from typing import Any

from .helpers import sha


async def _conversation(d: Any, owner: Any, members: list[Any]) -> str:
    r = await d.client.post("/v1/conversations", json={
        "type": "group", "participant_ids": [m.user_id for m in members], "name": "team"},
        headers=owner.headers)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def test_share_download_revoke(make_drive: Any, backend: str) -> None:
    d = await make_drive(backend)
    alice, bob, carol, mallory = await d.users(4)
    cid = await _conversation(d, alice, [bob, carol])
    data = os.urandom(4000)
    f = await d.upload(alice, data, name="plan.pdf", content_type="application/pdf")
    fid = f["id"]

    # before sharing, bob cannot see it
    await d.download(bob, fid, status=404)
    r = await d.client.post(f"/v1/drive/files/{fid}/shares", json={"conversation_id": cid},
                            headers=alice.headers)
    assert r.status == 201, await r.text()
    share = await r.json()
    assert share["conversation_id"] == cid and share["message_id"]
    again = await d.client.post(f"/v1/drive/files/{fid}/shares",
                                json={"conversation_id": cid}, headers=alice.headers)
    assert again.status == 200

    # the timeline has a `file` message pointing at the file
    r = await d.client.get(f"/v1/conversations/{cid}/messages", headers=bob.headers)
    messages = (await r.json())["messages"]
    files = [m for m in messages if m["message_type"] == "file"]
    assert len(files) == 1 and files[0]["file_id"] == fid

    # participants download; the outsider gets 404 (no existence leak)
    for reader in (bob, carol):
        link = await d.download(reader, fid)
        status, body, _ = await d.fetch(link["url"])
        assert status == 200 and sha(body) == sha(data)
        r = await d.client.get(f"/v1/drive/files/{fid}", headers=reader.headers)
        assert r.status == 200
    await d.download(mallory, fid, status=404)
    # readers cannot delete or reshare
    r = await d.client.delete(f"/v1/drive/files/{fid}", headers=bob.headers)
    assert r.status == 404
    r = await d.client.post(f"/v1/drive/files/{fid}/shares", json={"conversation_id": cid},
                            headers=bob.headers)
    assert r.status == 404

    # removing carol revokes her access immediately
    r = await d.client.delete(f"/v1/conversations/{cid}/participants/{carol.user_id}",
                              headers=alice.headers)
    assert r.status == 204, await r.text()
    await d.download(carol, fid, status=404)
    await d.download(bob, fid)

    # unsharing revokes everyone's access
    r = await d.client.delete(f"/v1/drive/files/{fid}/shares/{cid}", headers=alice.headers)
    assert r.status == 204
    await d.download(bob, fid, status=404)
    r = await d.client.delete(f"/v1/drive/files/{fid}/shares/{cid}", headers=alice.headers)
    assert r.status == 404


async def test_owner_must_be_a_participant(make_drive: Any) -> None:
    d = await make_drive("local")
    alice, bob, carol = await d.users(3)
    cid = await _conversation(d, bob, [carol])
    f = await d.upload(alice, b"hello")
    r = await d.client.post(f"/v1/drive/files/{f['id']}/shares",
                            json={"conversation_id": cid}, headers=alice.headers)
    assert r.status == 403 and (await r.json())["code"] == "not_a_participant"
    pending = await d.reserve(alice, 10)
    cid2 = await _conversation(d, alice, [bob])
    r = await d.client.post(f"/v1/drive/files/{pending['file']['id']}/shares",
                            json={"conversation_id": cid2}, headers=alice.headers)
    assert r.status == 409


async def test_deleting_a_shared_file_revokes_it(make_drive: Any) -> None:
    d = await make_drive("local")
    alice, bob = await d.users(2)
    cid = await _conversation(d, alice, [bob])
    f = await d.upload(alice, b"bye")
    r = await d.client.post(f"/v1/drive/files/{f['id']}/shares",
                            json={"conversation_id": cid}, headers=alice.headers)
    assert r.status == 201
    link = await d.download(bob, f["id"])
    r = await d.client.delete(f"/v1/drive/files/{f['id']}", headers=alice.headers)
    assert r.status == 204
    await d.download(bob, f["id"], status=404)
    status, _, _ = await d.fetch(link["url"])
    assert status == 404


async def _shared_then_sharer_left(make_drive: Any) -> tuple[Any, Any, str, Any]:
    """Alice shares a file into Bob's group (Carol reads it), then leaves the group."""
    d = await make_drive("local")
    alice, bob, carol = await d.users(3)
    cid = await _conversation(d, bob, [alice, carol])
    f = await d.upload(alice, b"mine")
    r = await d.client.post(f"/v1/drive/files/{f['id']}/shares",
                            json={"conversation_id": cid}, headers=alice.headers)
    assert r.status == 201
    await d.download(carol, f["id"])
    r = await d.client.delete(f"/v1/conversations/{cid}/participants/{alice.user_id}",
                              headers=alice.headers)
    assert r.status == 204, await r.text()
    return d, (alice, bob, carol), cid, f


async def test_sharer_leaving_takes_their_shares_along(make_drive: Any) -> None:
    from secureconnect.testing.helpers import wait_for

    d, (alice, _bob, carol), _cid, f = await _shared_then_sharer_left(make_drive)
    await d.download(carol, f["id"], status=404)

    async def share_dropped() -> bool:
        r = await d.client.get(f"/v1/drive/files/{f['id']}/shares", headers=alice.headers)
        return (await r.json())["items"] == []

    await wait_for(share_dropped, timeout=5, message="sc_participant_removed dropped the share")
    await d.download(alice, f["id"])  # the owner keeps the file


async def test_a_share_whose_sharer_left_gives_no_access_before_its_row_is_gone(
        make_drive: Any) -> None:
    """The share rows leave with the sharer through an announcement that runs after the
    removal's 204; until it has run, membership alone must refuse (the row is put back
    here as it still is in that window)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from plugins.drive.models import shares
    from secureconnect.app import KERNEL

    d, (alice, bob, carol), cid, f = await _shared_then_sharer_left(make_drive)
    async with d.client.app[KERNEL].db.session() as s:
        await s.execute(shares.delete().where(shares.c.file_id == f["id"]))
        await s.execute(insert(shares).values(
            file_id=f["id"], conversation_id=cid, shared_by=alice.user_id,
            created_at=datetime.now(UTC)))
    await d.download(carol, f["id"], status=404)
    await d.download(bob, f["id"], status=404)
    await d.download(alice, f["id"])


async def test_a_deleted_account_takes_its_files_along(make_drive: Any, backend: str) -> None:
    from secureconnect.testing.helpers import wait_for

    d = await make_drive(backend)
    alice, bob = await d.users(2)
    cid = await _conversation(d, alice, [bob])
    shared = await d.upload(alice, os.urandom(300))
    pending = await d.reserve(alice, 50)
    mine = await d.upload(bob, b"bob's")
    r = await d.client.post(f"/v1/drive/files/{shared['id']}/shares",
                            json={"conversation_id": cid}, headers=alice.headers)
    assert r.status == 201
    link = await d.download(bob, shared["id"])
    r = await d.client.request("DELETE", "/v1/users/me", json={"password": alice.password},
                               headers=alice.headers)
    assert r.status == 204, await r.text()

    async def objects_gone() -> bool:
        return not (await d.object_exists(shared["id"])
                    or await d.object_exists(pending["file"]["id"]))

    await wait_for(objects_gone, timeout=5, message="the deleted account's objects removed")
    await d.download(bob, shared["id"], status=404)
    status, _, _ = await d.fetch(link["url"])
    assert status in (403, 404)
    # someone else's files are untouched
    await d.download(bob, mine["id"])
    assert await d.object_exists(mine["id"])
