"""Auth tests that kill the mutations of issue 22, items 27-29: the rate limit during a
Redis outage, revocation across instances (over Redis, and over the bus alone), and
the login password-length cap."""

from __future__ import annotations

import asyncio

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import register_and_login

SECRET = {"jwt_secret": "two-instances-share-this-secret-0123456789"}


async def test_login_is_limited_while_redis_is_down(sc_client, redis_server):
    client = await sc_client({
        "redis": {"url": redis_server.url, "socket_timeout": 0.5},
        "rate_limits": {"classes": {"login": {"per_ip": "", "per_user": "3/minute"}}},
    })
    user = await register_and_login(client)  # one login: one hit on Redis
    redis_server.stop()
    statuses = []
    for _ in range(4):
        r = await client.post("/v1/auth/login",
                              json={"email": user.email, "password": "wrong-password-x"})
        statuses.append(r.status)
    # the per-instance fallback counts from zero: 3 attempts, then 429
    assert statuses == [401, 401, 401, 429], statuses
    r = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert client.app[KERNEL].metrics.value("rate_limit_fallback_total") >= 4


async def test_logout_on_one_instance_is_refused_on_another_at_once(
        sc_client, postgres_url, redis_server):
    overrides = {"database": {"url": postgres_url}, "redis": {"url": redis_server.url},
                 "auth": SECRET}
    a = await sc_client(overrides)
    b = await sc_client(overrides)
    user = await register_and_login(a)
    assert (await b.get("/v1/users/me", headers=user.headers)).status == 200  # B cached it
    assert (await a.post("/v1/auth/logout", headers=user.headers)).status == 204
    r = await b.get("/v1/users/me", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_revoked"


async def test_revocation_reaches_another_instance_over_the_bus_alone(
        aiohttp_client, sc_app, postgres_url):
    """Memory caches (not shared), one database, one bus: only the bus message can
    tell instance B at once that A revoked the session."""
    overrides = {"database": {"url": postgres_url}, "auth": SECRET}
    app_a, app_b = sc_app(overrides), sc_app(overrides)
    app_b[KERNEL].bus = app_a[KERNEL].bus
    a = await aiohttp_client(app_a)
    b = await aiohttp_client(app_b)
    user = await register_and_login(a)
    assert (await b.get("/v1/users/me", headers=user.headers)).status == 200  # B: "active"
    assert (await a.post("/v1/auth/logout", headers=user.headers)).status == 204
    r = await b.get("/v1/users/me", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_revoked"


async def test_overlong_login_passwords_are_refused_before_hashing(sc_client):
    # one hash at a time, each slow: an over-long password that reached the hasher
    # while another login holds it would get 503 auth_busy instead of 401
    client = await sc_client({"auth": {"hash_max_pending": 1, "argon2_time_cost": 20,
                                       "argon2_memory_cost": 32768}})
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    slow = asyncio.ensure_future(client.post(
        "/v1/auth/login", json={"email": user.email, "password": "wrong-password-1"}))
    await wait_for(lambda: kernel.auth.passwords._pending == 1, timeout=10,
                   message="the slow verification holds the hasher")
    statuses = []
    while not slow.done() and len(statuses) < 20:
        r = await client.post("/v1/auth/login",
                              json={"email": user.email, "password": "p" * 257})
        statuses.append(r.status)
    assert statuses and set(statuses) == {401}, statuses
    assert (await slow).status == 401
