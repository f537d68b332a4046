"""Access-token checks the mutation run of issue 22 found untested: a single access token
revoked on one instance is refused by another that shares the cache (the only path a
``jti`` revocation has to other instances), and every refusal is counted by its code."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import register_and_login

SECRET = {"jwt_secret": "revocation-paths-share-this-secret-0123456789"}


async def _me(client: Any, token: str) -> tuple[int, str]:
    r = await client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    body = await r.json()
    return r.status, body.get("code", "")


async def _metric(client: Any, sample: str) -> float:
    body = await (await client.get("/metrics")).text()
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.redis
async def test_a_token_revoked_on_one_instance_is_refused_by_another_through_the_cache(
        sc_client: Any, redis_server: Any, tmp_path: Any) -> None:
    shared = {"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"},
              "redis": {"url": redis_server.url}, "auth": SECRET}
    a = await sc_client(shared)
    b = await sc_client(shared)
    user = await register_and_login(a)
    assert await _me(b, user.access_token) == (200, "")  # B has the session as active
    principal = await a.server.app[KERNEL].auth.authenticate(user.access_token)
    await a.server.app[KERNEL].auth.revoke_access_token(principal)  # this token only
    assert await _me(b, user.access_token) == (401, "token_revoked")
    assert await _me(a, user.access_token) == (401, "token_revoked")
    # for as long as the token would have lived, not a moment (the 1 s floor) less
    await asyncio.sleep(1.5)
    assert await _me(b, user.access_token) == (401, "token_revoked")


async def test_refused_tokens_are_counted_by_code(sc_client: Any) -> None:
    client = await sc_client({"auth": SECRET})
    user = await register_and_login(client)
    before = await _metric(client, 'auth_token_rejected_total{code="invalid_token"}')
    assert await _me(client, "not.a.jwt") == (401, "invalid_token")
    assert await _me(client, user.access_token + "x") == (401, "invalid_token")
    assert await _metric(client, 'auth_token_rejected_total{code="invalid_token"}') == before + 2
    assert (await client.post("/v1/auth/logout", headers=user.headers)).status == 204
    r = await client.get("/v1/users/me", headers=user.headers)
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        401, "token_revoked", "the access token was revoked; log in again")
    assert await _metric(client, 'auth_token_rejected_total{code="token_revoked"}') == 1.0
