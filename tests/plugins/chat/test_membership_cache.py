"""The send path's membership cache: a removal is honoured at once on every instance,
even with a long cache lifetime, and a look-up racing a removal never stores a stale
"yes"."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secureconnect.testing import wait_for
from secureconnect_plugins.chat.membership import MembershipCache

from .helpers import create_group, send, users


@pytest.mark.redis
async def test_removal_on_one_instance_refuses_sends_on_another_at_once(
        sc_client: Any, redis_server: Any, tmp_path: Any) -> None:
    shared = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"},
        "redis": {"url": redis_server.url},
        "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"},
        # long enough that only the invalidation can explain a refusal within the test
        "chat": {"membership_cache_ttl": 60},
    }
    first = await sc_client(shared)
    second = await sc_client(shared)
    owner, member = await users(first, 2)
    cid = await create_group(first, owner, [member])
    await send(second, member, cid, "cached now")  # second caches "member is in"
    await send(second, member, cid, "from the cache")

    r = await first.delete(f"/v1/conversations/{cid}/participants/{member.user_id}",
                           headers=owner.headers)
    assert r.status == 204

    async def refused() -> bool:
        r = await second.post(f"/v1/conversations/{cid}/messages",
                              json={"content": "after removal"}, headers=member.headers)
        if r.status == 201:  # only possible before the bus delivered the removal
            return False
        assert r.status == 403, await r.text()
        assert (await r.json())["code"] == "not_a_participant"
        return True

    await wait_for(refused, timeout=2, interval=0.05, message="the removal reached instance 2")
    # and on the instance that removed them, refused straight away
    await send(first, member, cid, "no", status=403)


async def test_a_member_added_on_another_instance_can_send_at_once(
        sc_client: Any, tmp_path: Any) -> None:
    """Refusals are never cached: someone just added is let in by the next check."""
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/c.db"},
                              "chat": {"membership_cache_ttl": 60}})
    owner, late = await users(client, 2)
    cid = await create_group(client, owner, [])
    await send(client, late, cid, "not yet", status=403)
    r = await client.post(f"/v1/conversations/{cid}/participants",
                          json={"user_id": late.user_id}, headers=owner.headers)
    assert r.status in (200, 201), await r.text()
    await send(client, late, cid, "now in")


def test_a_look_up_that_began_before_a_removal_stores_nothing() -> None:
    cache = MembershipCache(ttl=60, max_entries=2)
    began = cache.epoch
    cache.forget_local("c1", "u1")  # the removal commits while the look-up runs
    cache.remember("c1", "u1", began)
    assert not cache.holds("c1", "u1")
    cache.remember("c1", "u1", cache.epoch)
    assert cache.holds("c1", "u1")
    # bounded: the oldest pair goes first
    cache.remember("c2", "u1", cache.epoch)
    cache.remember("c3", "u1", cache.epoch)
    assert len(cache) == 2 and not cache.holds("c1", "u1") and cache.holds("c3", "u1")
    assert not MembershipCache(ttl=0, max_entries=10).enabled


async def test_concurrent_checks_of_one_pair_share_one_look_up() -> None:
    cache = MembershipCache(ttl=60, max_entries=10)
    calls = 0
    release = asyncio.Event()

    async def fetch(answer: bool | None) -> bool:
        nonlocal calls
        calls += 1
        await release.wait()
        if answer is None:
            raise ConnectionError("database went away")
        return answer

    # a burst of sends from one member: one look-up, every send let in, then cached
    burst = [asyncio.ensure_future(cache.check("c", "u", lambda: fetch(True))) for _ in range(50)]
    await wait_for(lambda: calls == 1)
    release.set()
    assert await asyncio.gather(*burst) == [True] * 50
    assert calls == 1 and cache.holds("c", "u")

    # a refusal is shared too, and never cached
    release.clear()
    calls = 0
    burst = [asyncio.ensure_future(cache.check("c", "x", lambda: fetch(False))) for _ in range(5)]
    await wait_for(lambda: calls == 1)
    release.set()
    assert await asyncio.gather(*burst) == [False] * 5
    assert calls == 1 and not cache.holds("c", "x")

    # a failed shared look-up: its own caller gets the error, the others look up again
    release.clear()
    calls = 0
    first = asyncio.ensure_future(cache.check("c", "y", lambda: fetch(None)))
    await wait_for(lambda: calls == 1)
    others = [asyncio.ensure_future(cache.check("c", "y", lambda: fetch(True))) for _ in range(3)]
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(ConnectionError):
        await first
    assert await asyncio.gather(*others) == [True] * 3
    assert calls == 4


async def test_a_check_after_a_removal_does_not_join_a_look_up_begun_before_it() -> None:
    cache = MembershipCache(ttl=60, max_entries=10)
    release = asyncio.Event()
    answers = iter([True, False])  # a member, then removed

    async def fetch() -> bool:
        answer = next(answers)
        await release.wait()
        return answer

    before = asyncio.ensure_future(cache.check("c", "u", fetch))
    await asyncio.sleep(0)
    cache.forget_local("c", "u")  # the removal commits while that look-up runs
    after = asyncio.ensure_future(cache.check("c", "u", fetch))
    await asyncio.sleep(0)
    release.set()
    assert await before is True  # began before the removal
    assert await after is False  # looked up for itself
    assert not cache.holds("c", "u")  # the stale yes was not stored
