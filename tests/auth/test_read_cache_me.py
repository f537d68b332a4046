"""``GET /v1/users/me`` from the read cache (issue 20): every change of the account
shows on the next read, and a revoked token or a deleted account is refused although
its answer is cached (the token is checked before the cache is asked)."""

from __future__ import annotations

from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import mailed_token, register_and_login


def hits(client: Any) -> float:
    value = client.app[KERNEL].metrics.registry.get_sample_value(
        "read_cache_hits_total", {"kind": "auth.me"})
    return value or 0.0


async def me(client: Any, user: Any, status: int = 200) -> Any:
    r = await client.get("/v1/users/me", headers=user.headers)
    assert r.status == status, await r.text()
    return await r.json()


async def warm(client: Any, user: Any) -> Any:
    first = await me(client, user)
    before = hits(client)
    assert await me(client, user) == first
    assert hits(client) == before + 1, "users/me was not answered from the cache"
    return first


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"database": {"url": "sqlite+aiosqlite:///{data_dir}/me.db"}}
    return {"database": {"url": request.getfixturevalue("postgres_url")}}


async def test_profile_role_and_verification_show_at_once(sc_client: Any,
                                                          store: dict[str, Any]) -> None:
    client = await sc_client(store)
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    await warm(client, user)

    r = await client.patch("/v1/users/me", json={"display_name": "Renamed"},
                           headers=user.headers)
    assert r.status == 200, await r.text()
    assert (await me(client, user))["display_name"] == "Renamed"

    await warm(client, user)
    await kernel.auth.set_role(user.user_id, "admin")
    assert (await me(client, user))["role"] == "admin"

    # an unverified account, verified with its mailed token
    fresh = await register_and_login(client, email="fresh@example.com")
    await warm(client, fresh)
    token = await mailed_token(client, "fresh@example.com", "verify_email")
    r = await client.post("/v1/auth/verify-email", json={"token": token})
    assert r.status == 200, await r.text()
    assert (await me(client, fresh))["email_verified"] is True


async def test_logout_and_deletion_are_refused_although_cached(sc_client: Any,
                                                               store: dict[str, Any]) -> None:
    client = await sc_client(store)
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    await warm(client, user)
    r = await client.post("/v1/auth/logout", headers=user.headers)
    assert r.status == 204
    assert (await me(client, user, status=401))["code"] == "token_revoked"

    # deleted by its owner (REST) and by an administrator (the admin API's service call)
    for how in ("own", "admin"):
        doomed = await register_and_login(client)
        await warm(client, doomed)
        if how == "own":
            r = await client.delete("/v1/users/me", json={"password": doomed.password},
                                    headers=doomed.headers)
            assert r.status == 204, await r.text()
        else:
            await kernel.auth.delete_user(doomed.user_id)
        code = (await me(client, doomed, status=401))["code"]
        assert code in ("token_revoked", "invalid_token")
        # and the account row's answer is gone from the cache too
        assert kernel.read_cache.get(("auth.me", doomed.user_id)) is None

    # a password reset ends every session
    reset = await register_and_login(client)
    await warm(client, reset)
    r = await client.post("/v1/auth/password-reset", json={"email": reset.email})
    assert r.status == 202
    token = await mailed_token(client, reset.email, "password_reset")
    r = await client.post("/v1/auth/password-reset/confirm",
                          json={"token": token, "new_password": "another long passphrase 42"})
    assert r.status == 204, await r.text()
    await me(client, reset, status=401)


async def test_a_disabled_account_is_refused_although_cached(sc_client: Any) -> None:
    client = await sc_client()
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    await warm(client, user)
    await kernel.auth.set_disabled(user.user_id, True)
    await me(client, user, status=401)
