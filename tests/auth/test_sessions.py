"""Register → login → me → refresh → logout, rotation and reuse detection (black-box)."""

from __future__ import annotations

import asyncio

import pytest

from secureconnect.testing.accounts import DEFAULT_PASSWORD, register_and_login, unique_email


async def test_full_session_lifecycle(sc_client):
    client = await sc_client()
    email = unique_email("Alice")
    r = await client.post(
        "/v1/auth/register",
        json={
            "email": f"  {email.upper()} ",
            "password": DEFAULT_PASSWORD,
            "display_name": "  Alice   Liddell ",
        },
    )
    assert r.status == 201, await r.text()
    user = await r.json()
    assert user["email"] == email.lower()
    assert user["display_name"] == "Alice Liddell"
    assert user["role"] == "user" and user["email_verified"] is False
    assert "password" not in str(user) and "hash" not in str(user)

    r = await client.post("/v1/auth/login", json={"email": email, "password": DEFAULT_PASSWORD})
    assert r.status == 200
    assert r.headers["Cache-Control"] == "no-store"
    first = await r.json()
    assert first["token_type"] == "Bearer" and first["expires_in"] == 900
    headers = {"Authorization": f"Bearer {first['access_token']}"}

    r = await client.get("/v1/users/me", headers=headers)
    assert r.status == 200
    assert (await r.json())["id"] == user["id"]

    r = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status == 200
    second = await r.json()
    assert second["refresh_token"] != first["refresh_token"]
    new_headers = {"Authorization": f"Bearer {second['access_token']}"}
    assert (await client.get("/v1/users/me", headers=new_headers)).status == 200

    r = await client.post("/v1/auth/logout", headers=new_headers)
    assert r.status == 204
    for h in (headers, new_headers):  # every access token of the session, at once
        r = await client.get("/v1/users/me", headers=h)
        assert r.status == 401
        assert (await r.json())["code"] == "token_revoked"
    r = await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status == 401
    assert (await r.json())["code"] == "token_revoked"


async def test_logout_ends_only_that_session(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    r = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    other = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
    assert (await client.post("/v1/auth/logout", headers=user.headers)).status == 204
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 401
    assert (await client.get("/v1/users/me", headers=other)).status == 200


async def test_reused_rotated_refresh_token_revokes_the_whole_session(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    r = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    newer = await r.json()
    newer_headers = {"Authorization": f"Bearer {newer['access_token']}"}
    assert (await client.get("/v1/users/me", headers=newer_headers)).status == 200

    # the stolen, already rotated token comes back
    r = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status == 401
    assert (await r.json())["code"] == "token_reused"
    # ... and takes the newer refresh token and every access token of the session with it
    r = await client.post("/v1/auth/refresh", json={"refresh_token": newer["refresh_token"]})
    assert r.status == 401
    assert (await client.get("/v1/users/me", headers=newer_headers)).status == 401
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 401
    metrics = await (await client.get("/metrics")).text()
    assert "auth_refresh_token_reuse_total 1.0" in metrics
    assert 'auth_sessions_revoked_total{reason="refresh_token_reuse"} 1.0' in metrics


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_concurrent_refresh_with_one_token_yields_one_pair(sc_client, request, store):
    # on PostgreSQL the refreshes' transactions really overlap: the rotation's condition
    # (the token not yet rotated) is what lets only one of them win
    overrides = {}
    if store == "postgres":
        overrides = {"database": {"url": request.getfixturevalue("postgres_url")}}
    client = await sc_client(overrides)
    user = await register_and_login(client)
    results = await asyncio.gather(
        *(
            client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
            for _ in range(3)
        )
    )
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 401, 401]


async def test_unknown_refresh_token_and_missing_bearer(sc_client):
    client = await sc_client()
    r = await client.post("/v1/auth/refresh", json={"refresh_token": "nope"})
    assert r.status == 401 and (await r.json())["code"] == "invalid_token"
    r = await client.get("/v1/users/me")
    assert r.status == 401 and (await r.json())["code"] == "missing_token"
    assert r.headers["WWW-Authenticate"] == "Bearer"


async def test_wrong_password_and_unknown_email_look_the_same(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    bodies = []
    for email, password in ((user.email, "wrong password!!"), (unique_email(), "whatever123")):
        r = await client.post("/v1/auth/login", json={"email": email, "password": password})
        assert r.status == 401
        body = await r.json()
        bodies.append((body["code"], body["detail"]))
    assert bodies[0] == bodies[1] == ("invalid_credentials", "the email or password is wrong")
    metrics = await (await client.get("/metrics")).text()
    assert 'auth_attempts_total{result="invalid_credentials"} 2.0' in metrics
    assert 'auth_attempts_total{result="success"} 1.0' in metrics


async def test_refreshing_one_session_leaves_the_others_tokens_alone(sc_client):
    """The rotation retires the presented token only: another session of the same user
    (and another user's) still refreshes, once."""
    client = await sc_client()
    user = await register_and_login(client)
    other = await register_and_login(client)
    r = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    second_session = await r.json()
    r = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status == 200, await r.text()
    for token in (second_session["refresh_token"], other.refresh_token):
        r = await client.post("/v1/auth/refresh", json={"refresh_token": token})
        assert r.status == 200, await r.text()


async def test_an_expired_session_refreshes_no_more(sc_client):
    from datetime import timedelta

    from secureconnect.app import KERNEL

    client = await sc_client()
    user = await register_and_login(client)
    kernel = client.app[KERNEL]
    ttl = int(kernel.settings.auth.refresh_token_ttl)
    started = kernel.auth.now()
    kernel.auth.now = lambda: started + timedelta(seconds=ttl + 1)
    r = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    body = await r.json()
    assert (r.status, body["code"], body["detail"]) == (
        401, "token_expired", "the session has expired; log in again")


async def test_cleanup_deletes_only_sessions_ended_past_the_grace(sc_client):
    """`delete_expired` (the cleanup job's work): a session is deleted once it has been
    expired for the grace period, not before; live sessions stay; the counts are exact."""
    from datetime import timedelta

    from secureconnect.app import KERNEL

    client = await sc_client()  # (a fresh database of its own: exact counts)
    kernel = client.app[KERNEL]
    old, live = await register_and_login(client), await register_and_login(client)
    ttl = int(kernel.settings.auth.refresh_token_ttl)
    started = kernel.auth.now()
    kernel.auth.now = lambda: started + timedelta(seconds=ttl + 50)
    # the sessions expired 50 s ago: within the grace, kept (the two verification links,
    # 24 h, go); the other user logs in "now"
    assert await kernel.auth.delete_expired(session_grace=100) == (2, 0)
    r = await client.post("/v1/auth/login", json={"email": live.email, "password": live.password})
    fresh = await r.json()
    # ... and 150 s later both of the first sessions have ended 150 s before: deleted
    kernel.auth.now = lambda: started + timedelta(seconds=ttl + 150)
    assert await kernel.auth.delete_expired(session_grace=100) == (0, 2)
    assert await kernel.auth.delete_expired(session_grace=100) == (0, 0)
    kernel.auth.now = lambda: started
    for token in (old.refresh_token, live.refresh_token):
        r = await client.post("/v1/auth/refresh", json={"refresh_token": token})
        assert (r.status, (await r.json())["code"]) == (401, "invalid_token")
    r = await client.post("/v1/auth/refresh", json={"refresh_token": fresh["refresh_token"]})
    assert r.status == 200, await r.text()
