"""The send path's membership cache under concurrency (issue 22, mutation run): checks
of different pairs never share an answer (an outsider must not ride on a member's
look-up), a cached "yes" is used without asking again, an expired one is gone at
once, and a look-up that outlives a later one for the same pair still answers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from secureconnect.testing import wait_for
from secureconnect_plugins.chat.membership import MembershipCache


async def test_concurrent_checks_of_different_pairs_never_share_an_answer() -> None:
    cache = MembershipCache(ttl=60, max_entries=10)
    release = asyncio.Event()
    calls: dict[tuple[str, str], int] = {}
    truth = {("c", "member"): True, ("c", "outsider"): False, ("d", "member"): False}

    def fetch_for(pair: tuple[str, str]) -> Callable[[], Awaitable[bool]]:
        async def fetch() -> bool:
            calls[pair] = calls.get(pair, 0) + 1
            await release.wait()
            return truth[pair]
        return fetch

    checks = [asyncio.ensure_future(cache.check(c, u, fetch_for((c, u)))) for c, u in truth]
    await wait_for(lambda: len(calls) == 3, timeout=5, message="three look-ups in flight")
    release.set()
    assert await asyncio.gather(*checks) == [True, False, False]
    assert calls == {pair: 1 for pair in truth}
    assert cache.holds("c", "member") and not cache.holds("c", "outsider")
    assert not cache.holds("d", "member")


async def test_a_cached_yes_is_used_without_asking_again() -> None:
    cache = MembershipCache(ttl=60, max_entries=10)

    async def yes() -> bool:
        return True

    async def must_not_be_asked() -> bool:
        raise AssertionError("the cached answer was not used")

    assert await cache.check("c", "u", yes) is True
    assert await cache.check("c", "u", must_not_be_asked) is True
    assert len(cache) == 1


async def test_an_expired_yes_is_gone_at_once() -> None:
    cache = MembershipCache(ttl=0.05, max_entries=10)
    cache.remember("c", "u", cache.epoch)
    assert cache.holds("c", "u")
    await asyncio.sleep(0.15)
    assert not cache.holds("c", "u")  # the first look after the expiry already says no
    assert len(cache) == 0


async def test_a_look_up_outliving_a_later_one_of_the_same_pair_still_answers() -> None:
    """A removal moves the epoch while a look-up runs; a second look-up of the pair starts
    and finishes first. The first still answers (and stores nothing: it is stale)."""
    cache = MembershipCache(ttl=60, max_entries=10)
    first_done, second_done = asyncio.Event(), asyncio.Event()

    async def before_removal() -> bool:
        await first_done.wait()
        return True

    async def after_removal() -> bool:
        await second_done.wait()
        return False

    first = asyncio.ensure_future(cache.check("c", "u", before_removal))
    await asyncio.sleep(0)
    cache.forget_local("c", "u")
    second = asyncio.ensure_future(cache.check("c", "u", after_removal))
    await asyncio.sleep(0)
    second_done.set()
    assert await second is False
    first_done.set()
    assert await first is True
    assert not cache.holds("c", "u")
