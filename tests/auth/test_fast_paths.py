"""The fast authenticated path keeps its guarantees (issue 20): a verified token is
remembered per instance, yet revocation is immediate — also across instances — and an
expired token is refused on a hit."""

from __future__ import annotations

import time
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import register_and_login


@pytest.mark.postgres
@pytest.mark.redis
async def test_logout_on_one_instance_refuses_the_next_request_on_the_other(
        sc_client: Any, postgres_url: str, redis_server: Any) -> None:
    shared = {
        "database": {"url": postgres_url},
        "redis": {"url": redis_server.url},
        "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"},
    }
    a, b = await sc_client(shared), await sc_client(shared)
    user = await register_and_login(a)
    for _ in range(3):  # warm: the token verified and the session cached "active" on both
        assert (await a.get("/v1/users/me", headers=user.headers)).status == 200
        assert (await b.get("/v1/users/me", headers=user.headers)).status == 200
    assert (await b.post("/v1/auth/logout", headers=user.headers)).status == 204
    # no waiting: the very next request on the other instance is refused
    r = await a.get("/v1/users/me", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_revoked"
    r = await a.get("/v1/conversations", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_revoked"


async def test_a_remembered_token_is_still_refused_once_expired(sc_client: Any) -> None:
    client = await sc_client({"auth": {"jwt_leeway": 0}})
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 200
    keys = kernel.auth.keys
    memo = next(k for k in keys._verified if k[0] == user.access_token)
    claims = keys._verified[memo]
    # the same claims, expired a second ago (as time passing would leave them)
    keys._verified[memo] = type(claims)(claims.user_id, claims.session_id, claims.jti,
                                        claims.role, claims.issued_at, int(time.time()) - 1)
    r = await client.get("/v1/users/me", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_expired"
    assert memo not in keys._verified
    # a token signed with another key is refused, remembered tokens notwithstanding
    forged = user.access_token[:-4] + ("AAAA" if user.access_token[-4:] != "AAAA" else "BBBB")
    r = await client.get("/v1/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert r.status == 401 and (await r.json())["code"] == "invalid_token"


async def test_profile_change_is_read_back_at_once(sc_client: Any) -> None:
    """Read-your-writes through the on-loop reader: a change committed by a request is
    what the next request reads. (The writes here bypass the service, so the read
    cache, which only they move, is off; tests/auth/test_read_cache_me.py covers it.)"""
    client = await sc_client({"cache": {"enabled": False}})
    user = await register_and_login(client)
    kernel = client.app[KERNEL]
    from sqlalchemy import update

    from secureconnect.auth import models

    for i in range(20):
        async with kernel.db.connect() as conn:
            await conn.execute(update(models.users).where(models.users.c.id == user.user_id)
                               .values(display_name=f"name {i}"))
        me = await (await client.get("/v1/users/me", headers=user.headers)).json()
        assert me["display_name"] == f"name {i}"
