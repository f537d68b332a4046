"""Account deletion (issue 22, item 18): ``DELETE /v1/users/me {password}`` (directory
plugin) and ``DELETE /v1/admin/users/{id}`` (admin API); the account's tokens stop
working at once, on every instance, and chat forgets its memberships."""

from __future__ import annotations

import asyncio

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import DEFAULT_PASSWORD, register_and_login, unique_email
from tests.plugins.chat.helpers import create_group


async def _direct(client, a, b) -> str:
    r = await client.post("/v1/conversations", headers=a.headers,
                          json={"type": "direct", "participant_ids": [b.user_id]})
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def test_delete_me_needs_the_password_then_everything_ends_at_once(sc_client):
    client = await sc_client()
    me, other = await register_and_login(client), await register_and_login(client)
    cid = await _direct(client, me, other)
    # warm the session cache: the token has just been seen as active
    assert (await client.get("/v1/conversations", headers=me.headers)).status == 200
    r = await client.delete("/v1/users/me", json={"password": "wrong-password-1"},
                            headers=me.headers)
    # 403, not 401: the token is fine, a client must not take it for a dead session
    assert r.status == 403 and (await r.json())["code"] == "invalid_password"
    assert (await client.get("/v1/users/me", headers=me.headers)).status == 200
    r = await client.delete("/v1/users/me", json={}, headers=me.headers)
    assert r.status == 422

    r = await client.delete("/v1/users/me", json={"password": me.password},
                            headers=me.headers)
    assert r.status == 204, await r.text()
    for path in ("/v1/users/me", "/v1/conversations", f"/v1/conversations/{cid}/messages"):
        r = await client.get(path, headers=me.headers)
        assert r.status == 401, (path, await r.text())
    r = await client.post("/v1/auth/refresh", json={"refresh_token": me.refresh_token})
    assert r.status == 401
    r = await client.post("/v1/auth/login", json={"email": me.email, "password": me.password})
    assert r.status == 401
    # chat removed the account from the conversation
    r = await client.get(f"/v1/conversations/{cid}", headers=other.headers)
    assert r.status == 200
    members = {p["user_id"] for p in (await r.json())["participants"]}
    assert me.user_id not in members
    # the address is free again
    r = await client.post("/v1/auth/register", json={
        "email": me.email, "password": DEFAULT_PASSWORD, "display_name": "again"})
    assert r.status == 201


async def test_delete_me_wrong_passwords_are_limited(sc_client):
    client = await sc_client({"rate_limits": {"classes": {"login": {
        "per_ip": "", "per_user": "3/minute"}}}})
    me = await register_and_login(client)
    statuses = []
    for _ in range(4):
        r = await client.delete("/v1/users/me", json={"password": "not-the-password"},
                                headers=me.headers)
        statuses.append(r.status)
    assert statuses == [403, 403, 403, 429]


async def test_admin_deletes_accounts_others_may_not(sc_client):
    from secureconnect.auth.service import create_user

    client = await sc_client()
    kernel = client.app[KERNEL]
    email = unique_email("admin")
    await create_user(kernel, email, DEFAULT_PASSWORD, "Admin", admin=True)
    r = await client.post("/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD})
    admin_headers = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
    victim, mallory = await register_and_login(client), await register_and_login(client)

    r = await client.delete(f"/v1/admin/users/{victim.user_id}", headers=mallory.headers)
    assert r.status == 403 and (await r.json())["code"] == "admin_only"
    assert (await client.get("/v1/users/me", headers=victim.headers)).status == 200
    r = await client.delete(f"/v1/admin/users/{victim.user_id}", headers=admin_headers)
    assert r.status == 204
    assert (await client.get("/v1/users/me", headers=victim.headers)).status == 401
    for bad in (victim.user_id, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        r = await client.delete(f"/v1/admin/users/{bad}", headers=admin_headers)
        assert r.status == 404 and (await r.json())["code"] == "user_not_found"


async def test_deletion_on_one_instance_refuses_the_token_on_another_at_once(
        sc_client, postgres_url, redis_server):
    overrides = {"database": {"url": postgres_url}, "redis": {"url": redis_server.url},
                 "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"}}
    a = await sc_client(overrides)
    b = await sc_client(overrides)
    me = await register_and_login(a)
    # instance B has seen the token as active (its session cache says so)
    assert (await b.get("/v1/conversations", headers=me.headers)).status == 200
    r = await a.delete("/v1/users/me", json={"password": me.password}, headers=me.headers)
    assert r.status == 204
    r = await b.get("/v1/conversations", headers=me.headers)
    assert r.status == 401, await r.text()
    assert (await r.json())["code"] == "token_revoked"


async def test_deletion_leaves_the_later_conversations_when_a_concurrent_removal_wins_one(
        sc_client, sc_ws, postgres_url):
    """Another admin's removal of the account from its first conversation is in flight
    (this test's open transaction holds the row) when the account is deleted: chat's
    removal there waits on the row, then finds it gone (404 inside ``leave_all``), and
    still leaves the second and third conversations (mutant ``leave_all#11``)."""
    asyncpg = pytest.importorskip("asyncpg", reason="install the `postgres` extra")
    client = await sc_client({"database": {"url": postgres_url}})
    owner, me = await register_and_login(client), await register_and_login(client)
    for i in range(3):
        await create_group(client, owner, [me], name=f"g{i}")
    ws = await sc_ws(client, owner.access_token)

    db = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        # leave_all visits the account's conversations in this order: the first is held
        cids = [r[0] for r in await db.fetch("SELECT conversation_id FROM chat_participants"
                                             " WHERE user_id = $1 ORDER BY conversation_id",
                                             me.user_id)]
        assert len(cids) == 3
        removal = db.transaction()
        await removal.start()
        status = await db.execute("DELETE FROM chat_participants WHERE conversation_id = $1"
                                  " AND user_id = $2", cids[0], me.user_id)
        assert status == "DELETE 1"
        deletion = asyncio.ensure_future(client.delete(
            "/v1/users/me", json={"password": me.password}, headers=me.headers))

        async def chat_removal_waits_on_the_row() -> bool:
            # the waiter holds the row's tuple lock and waits for this transaction (its
            # pg_stat_activity.query still shows its previous statement: asyncpg)
            return bool(await db.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'tuple' AND granted"
                " AND relation = 'chat_participants'::regclass"
                " AND $1 = ANY(pg_blocking_pids(pid))", db.get_server_pid()))

        await wait_for(chat_removal_waits_on_the_row, timeout=10,
                       message="chat's removal blocked on the held participant row")
        await removal.commit()
        r = await asyncio.wait_for(deletion, timeout=10)
        assert r.status == 204, await r.text()

        for cid in cids:
            r = await client.get(f"/v1/conversations/{cid}", headers=owner.headers)
            assert r.status == 200, await r.text()
            members = {p["user_id"] for p in (await r.json())["participants"]}
            assert members == {owner.user_id}, (cid, members)
        for cid in cids[1:]:  # left by the deletion; the first went by the other removal
            frame = await ws.expect("conversation.participant_removed")
            assert frame["data"] == {"conversation_id": cid, "user_id": me.user_id,
                                     "by": me.user_id, "new_owner_id": None}
        await ws.expect_nothing("conversation.participant_removed")
        assert await db.fetchval("SELECT count(*) FROM chat_participants WHERE user_id = $1",
                                 me.user_id) == 0
    finally:
        await db.close()
