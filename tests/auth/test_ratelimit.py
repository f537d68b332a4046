"""Rate limits: per IP, per user, per target account; 429 with Retry-After; fail-open."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from secureconnect.testing.accounts import register_and_login, unique_email

LOGIN_5_PER_MINUTE = {"rate_limits": {"classes": {"login": {"per_ip": "5/minute", "per_user": ""}}}}


async def _login(client, email: str, password: str = "wrong password!!"):
    return await client.post("/v1/auth/login", json={"email": email, "password": password})


async def test_brute_force_on_login_gets_429_with_retry_after(sc_client):
    client = await sc_client(LOGIN_5_PER_MINUTE)
    email = unique_email()
    for _ in range(5):
        assert (await _login(client, email)).status == 401
    r = await _login(client, email)
    assert r.status == 429
    assert r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == "rate_limited"
    retry_after = int(r.headers["Retry-After"])
    assert 1 <= retry_after <= 61
    assert body["retry_after"] == retry_after
    metrics = await (await client.get("/metrics")).text()
    assert 'rate_limit_blocked_total{rate_class="login",scope="ip"} 1.0' in metrics
    assert 'rate_limit_hits_total{rate_class="login",scope="ip"} 6.0' in metrics
    # other route classes are counted separately
    assert (await client.get("/v1/users/me")).status == 401


async def test_login_attempts_per_account_are_limited_across_addresses(sc_client):
    client = await sc_client(
        {"rate_limits": {"classes": {"login": {"per_ip": "", "per_user": "3/minute"}}}}
    )
    victim, other = unique_email(), unique_email()
    for _ in range(3):
        assert (await _login(client, victim)).status == 401
    r = await _login(client, victim)
    assert r.status == 429 and "Retry-After" in r.headers
    assert (await _login(client, other)).status == 401


async def test_per_user_limit_counts_the_authenticated_user(sc_client):
    client = await sc_client(
        {"rate_limits": {"classes": {"default": {"per_ip": "", "per_user": "3/minute"}}}}
    )
    alice = await register_and_login(client)
    bob = await register_and_login(client)
    for _ in range(3):
        assert (await client.get("/v1/users/me", headers=alice.headers)).status == 200
    r = await client.get("/v1/users/me", headers=alice.headers)
    assert r.status == 429
    assert (await client.get("/v1/users/me", headers=bob.headers)).status == 200


async def test_disabled_limits_never_block(sc_client):
    client = await sc_client(
        {"rate_limits": {"enabled": False, **LOGIN_5_PER_MINUTE["rate_limits"]}}
    )
    email = unique_email()
    for _ in range(8):
        assert (await _login(client, email)).status == 401


async def test_bad_limit_strings_stop_start_up(sc_app):
    from secureconnect.errors import ConfigError

    with pytest.raises(ConfigError, match=r"rate_limits\.classes"):
        sc_app({"rate_limits": {"classes": {"login": {"per_ip": "ten per minute"}}}})


# -- with a real Redis that goes away ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _PrivateRedis:
    """A throwaway redis-server (used until tests/conftest.py provides `redis_server`)."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1),
            ):
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)
            self.process = None


@pytest.fixture
async def redis(request, tmp_path) -> AsyncIterator[object]:
    try:
        server = request.getfixturevalue("redis_server")
    except pytest.FixtureLookupError:
        server = _PrivateRedis(tmp_path)
        await server.start()
        yield server
        await server.stop()
        return
    yield server


@pytest.mark.redis
async def test_redis_backed_limits_fail_open_when_redis_stops(sc_client, redis):
    client = await sc_client(
        {"redis": {"url": redis.url, "socket_timeout": 0.5}, **LOGIN_5_PER_MINUTE}
    )
    user = await register_and_login(client)  # one login counted in Redis
    for _ in range(4):
        assert (await _login(client, user.email)).status == 401
    assert (await _login(client, user.email)).status == 429  # the shared counter works
    metrics = await (await client.get("/metrics")).text()
    assert "rate_limit_fallback_total 0.0" in metrics  # ... and it was Redis's

    stopped = redis.stop()  # the shared fixture's stop() may be sync or async
    if inspect.isawaitable(stopped):
        await stopped
    # Redis is gone: requests are still served, from per-instance memory counters
    r = await client.get("/v1/users/me", headers=user.headers)
    assert r.status == 200, await r.text()
    r = await _login(client, user.email, user.password)
    assert r.status == 200, await r.text()
    metrics = await (await client.get("/metrics")).text()
    fallback = [
        line for line in metrics.splitlines() if line.startswith("rate_limit_fallback_total ")
    ]
    assert fallback and float(fallback[0].split()[1]) >= 1


async def test_forwarded_for_is_trusted_only_when_configured(sc_client):
    limits = {"classes": {"login": {"per_ip": "2/minute", "per_user": ""}}}
    trusting = await sc_client({"rate_limits": {**limits, "trust_forwarded_for": True}})
    email = unique_email()
    for client_ip in ("198.51.100.1", "198.51.100.2", "198.51.100.3"):
        for _ in range(2):
            r = await trusting.post(
                "/v1/auth/login",
                json={"email": email, "password": "wrong password!!"},
                # a spoofed first entry changes nothing: the proxy's (last) entry counts
                headers={"X-Forwarded-For": f"10.9.9.9, {client_ip}"},
            )
            assert r.status == 401
    r = await trusting.post(
        "/v1/auth/login",
        json={"email": email, "password": "wrong password!!"},
        headers={"X-Forwarded-For": "203.0.113.7, 198.51.100.1"},
    )
    assert r.status == 429

    direct = await sc_client({"rate_limits": limits})
    statuses = []
    for i in range(3):
        r = await direct.post(
            "/v1/auth/login",
            json={"email": email, "password": "wrong password!!"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"},
        )
        statuses.append(r.status)
    assert statuses == [401, 401, 429]


# -- the per-instance moving window ----------------------------------------------------------


async def test_memory_moving_window_agrees_with_limits_and_moves():
    """The native per-instance moving window answers as ``limits``' memory storage does
    (same sequence of hits over several keys and limits), lets a slot free exactly when
    its hit leaves the window, reports when, and forgets keys idle for a window."""
    import random
    import time

    from limits.aio import storage, strategies

    from secureconnect.auth.ratelimit import MemoryMovingWindow, parse_limits

    ours = MemoryMovingWindow()
    theirs = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
    items = [*parse_limits("3/minute"), *parse_limits("5/hour;7/day")]
    rng = random.Random(20)
    for _ in range(300):
        item = rng.choice(items)
        key = rng.choice(["ip", "user"]), rng.choice(["a", "b", "c"])
        assert await ours.hit(item, *key) == await theirs.hit(item, *key)
        assert (await ours.get_window_stats(item, *key)).remaining == \
            (await theirs.get_window_stats(item, *key)).remaining
    timer = getattr(theirs.storage, "timer", None)
    if timer is not None:
        timer.cancel()

    (second,) = parse_limits("3/second")
    window = MemoryMovingWindow()
    start = time.monotonic()
    assert [await window.hit(second, "k") for _ in range(2)] == [True, True]
    await asyncio.sleep(0.5)
    assert await window.hit(second, "k")
    assert not await window.hit(second, "k")  # three within the last second
    stats = await window.get_window_stats(second, "k")
    assert stats.remaining == 0
    assert 0.3 < stats.reset_time - time.time() <= 0.5 + 0.01  # the first two leave then
    await asyncio.sleep(max(0.0, start + 1.05 - time.monotonic()))
    # the first two left the window, the third is still in it
    assert [await window.hit(second, "k") for _ in range(3)] == [True, True, False]
    assert await window.hit(second, "other")
    assert len(window) == 2
    await asyncio.sleep(1.05)
    assert await window.hit(second, "third")
    assert len(window) == 1  # the keys idle for a whole window are gone
