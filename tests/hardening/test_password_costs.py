"""argon2 as configured (issue 22, mutation run): a stored hash carries the configured
cost parameters, an unknown account's login verifies against a dummy hash of those same
parameters (the timing equaliser), and the hash queue's bound is exact."""

from __future__ import annotations

import asyncio
import logging
import re
import threading

import pytest
from sqlalchemy import select

from secureconnect.app import KERNEL
from secureconnect.auth import models as m
from secureconnect.auth.passwords import HasherBusy, PasswordHashing
from secureconnect.testing.accounts import register_and_login

# none of them argon2-cffi's defaults (t=3, m=65536, p=4) nor the test profile's
COSTS = {"argon2_time_cost": 2, "argon2_memory_cost": 2048, "argon2_parallelism": 2}
EXPECTED = {"m": 2048, "t": 2, "p": 2}
HASH_RE = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[^$]+\$[^$]+$")


def _costs(password_hash: str | None) -> dict[str, int]:
    match = HASH_RE.match(password_hash or "")
    assert match, f"not an argon2id hash: {password_hash!r}"
    return dict(zip("mtp", map(int, match.groups()), strict=True))


async def test_a_stored_hash_carries_the_configured_costs(sc_client) -> None:
    client = await sc_client({"auth": COSTS})
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    async with kernel.db.connect() as conn:
        stored = (await conn.execute(select(m.users.c.password_hash)
                                     .where(m.users.c.id == user.user_id))).scalar_one()
    assert _costs(stored) == EXPECTED
    assert _costs(await kernel.auth.passwords.hash("another password")) == EXPECTED


async def test_an_unknown_account_is_verified_against_a_configured_dummy_hash(
    sc_client, caplog
) -> None:
    client = await sc_client({"auth": COSTS})
    kernel = client.server.app[KERNEL]
    with caplog.at_level(logging.WARNING, logger="secureconnect.auth.passwords"):
        for _ in range(2):
            r = await client.post("/v1/auth/login", json={
                "email": "nobody-here@example.com", "password": "some password here"})
            assert (r.status, (await r.json())["code"]) == (401, "invalid_credentials")
    # the login ran a real verification: against an argon2id hash of the configured
    # costs (made once), not a hash that fails at once (corrupt/empty: logged and fast)
    dummy = kernel.auth.passwords._dummy_hash
    assert _costs(dummy) == EXPECTED
    assert not await kernel.auth.passwords.verify(dummy, "some password here")
    assert [r.getMessage() for r in caplog.records
            if r.name == "secureconnect.auth.passwords"] == []


async def test_exactly_max_pending_hashes_may_wait() -> None:
    hashing = PasswordHashing(time_cost=1, memory_cost=8, parallelism=1, workers=1,
                              max_pending=3)
    hashing.start()
    gate = threading.Event()
    assert hashing._executor is not None
    blocker = hashing._executor.submit(gate.wait, 30)  # the one worker is busy
    try:
        waiting = [asyncio.create_task(hashing.hash(f"password {i}")) for i in range(3)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(t.done() for t in waiting)  # all three accepted, queued
        one_more = asyncio.create_task(hashing.hash("password 3"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert one_more.done(), "a fourth hash was queued beyond max_pending = 3"
        with pytest.raises(HasherBusy) as caught:
            one_more.result()
        e = caught.value
        assert (e.status, e.code, e.detail, dict(e.headers)) == (
            503, "auth_busy", "too many password checks in progress; retry in a moment",
            {"Retry-After": "1"})
    finally:
        gate.set()
    blocker.result(timeout=30)
    hashes = await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
    assert [await hashing.verify(h, f"password {i}") for i, h in enumerate(hashes)] == [
        True] * 3
    # the queue drained: the bound counts only what is pending
    assert await hashing.verify(await hashing.hash("after"), "after")
    hashing.close()


async def test_close_stops_the_pool_at_once_and_drops_queued_hashes() -> None:
    """Shutdown does not wait for a running hash nor run the queued ones; the pool's
    threads end, and a later start gets a new pool."""
    hashing = PasswordHashing(time_cost=1, memory_cost=8, parallelism=1, workers=1,
                              max_pending=4)
    hashing.start()
    pool = hashing._executor
    assert pool is not None
    gate = threading.Event()
    running = pool.submit(gate.wait, 30)
    queued = asyncio.create_task(hashing.hash("queued"))
    for _ in range(5):
        await asyncio.sleep(0)
    threads = list(pool._threads)
    try:
        hashing.close()
        assert not running.done(), "close waited for the running hash"
    finally:
        gate.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(queued, timeout=10)
    assert running.result(timeout=10) is True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while any(t.is_alive() for t in threads):
        assert loop.time() < deadline, "the pool's threads outlived close()"
        await asyncio.sleep(0.02)
    hashing.start()
    assert await hashing.verify(await hashing.hash("again"), "again")
    hashing.close()
