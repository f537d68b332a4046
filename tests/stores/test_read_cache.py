"""The kernel's read cache (secureconnect/store/readcache.py, issue 20): versions,
bounds, lifetime, and nothing served while the bus is (or was) down."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from secureconnect.metrics import Metrics
from secureconnect.store.bus import InProcessBus, RedisBus
from secureconnect.store.readcache import ENTRY_OVERHEAD, ReadCache
from secureconnect.testing import wait_for


def settings(**overrides: Any) -> Any:
    values = {"enabled": True, "ttl": 60.0, "max_entries": 1000, "max_bytes": 1 << 20,
              "max_versions": 1000, **overrides}
    return SimpleNamespace(**values)


def make(bus: Any = None, **overrides: Any) -> ReadCache:
    metrics = Metrics()
    return ReadCache(settings(**overrides), metrics, bus or InProcessBus(metrics))


def store(cache: ReadCache, key: str, value: bytes, *deps: str) -> bool:
    return cache.put((key,), value, deps, cache.begin())


async def test_an_entry_is_served_until_a_version_it_was_built_from_moves() -> None:
    cache = make()
    assert store(cache, "a", b"A", "user:1", "conv:1")
    assert store(cache, "b", b"B", "conv:2")
    assert cache.get(("a",)) == b"A"
    await cache.invalidate("conv:1")
    assert cache.get(("a",)) is None
    assert cache.get(("b",)) == b"B"  # other keys untouched
    assert store(cache, "a", b"A2", "user:1", "conv:1")
    assert cache.get(("a",)) == b"A2"


async def test_a_write_committed_while_the_read_ran_leaves_nothing_stale() -> None:
    cache = make()
    stamp = cache.begin()  # the read starts …
    await cache.invalidate("conv:1")  # … a write commits meanwhile …
    assert not cache.put(("a",), b"old", ["conv:1"], stamp)  # … its answer is refused
    assert cache.get(("a",)) is None
    # a write to something else does not refuse it
    stamp = cache.begin()
    await cache.invalidate("conv:9")
    assert cache.put(("a",), b"new", ["conv:1"], stamp)


async def test_entries_expire_after_the_ttl() -> None:
    cache = make(ttl=0.05)
    assert store(cache, "a", b"A", "k")
    assert cache.get(("a",)) == b"A"
    await wait_for(lambda: cache.get(("a",)) is None, timeout=2, message="expired")


async def test_entries_and_bytes_are_bounded_least_recently_used_first() -> None:
    cache = make(max_entries=3)
    for name in "abc":
        assert store(cache, name, b"x", "k")
    assert cache.get(("a",)) == b"x"  # a is now the most recent
    assert store(cache, "d", b"x", "k")
    assert len(cache) == 3 and cache.get(("b",)) is None
    assert {n for n in "acd" if cache.get((n,)) is not None} == set("acd")

    entry = 1000 + ENTRY_OVERHEAD + 64
    cache = make(max_bytes=3 * entry)
    for name in "abcd":
        assert store(cache, name, b"y" * 1000, "k")
    assert len(cache) == 3 and cache.size_bytes <= 3 * entry
    assert cache.get(("a",)) is None
    assert not store(cache, "huge", b"z" * (4 * entry), "k")  # larger than the whole cache
    assert cache.get(("huge",)) is None


async def test_forgetting_versions_past_the_bound_stays_correct() -> None:
    cache = make(max_versions=100)
    assert store(cache, "old", b"O", "conv:1")
    await cache.invalidate("conv:1")
    assert store(cache, "fresh", b"F", "conv:1")
    for i in range(150):  # the version table overflows and is emptied
        await cache.invalidate(f"other:{i}")
    assert len(cache._versions) <= 100
    assert cache.get(("old",)) is None
    # an entry made after the last move is still good …
    assert store(cache, "after", b"A", "conv:1")
    assert cache.get(("after",)) == b"A"
    # … and a move after that still invalidates it
    await cache.invalidate("conv:1")
    assert cache.get(("after",)) is None


async def test_switched_off_it_serves_and_stores_nothing() -> None:
    cache = make(enabled=False)
    assert cache.begin() is None
    assert not store(cache, "a", b"A", "k")
    assert cache.get(("a",)) is None and len(cache) == 0


@pytest.mark.redis
async def test_over_redis_bumps_reach_the_other_instance_and_an_outage_empties_it(
        redis_server: Any) -> None:
    metrics = Metrics()
    bus_a, bus_b = RedisBus(redis_server.url, metrics), RedisBus(redis_server.url, Metrics())
    a, b = ReadCache(settings(), metrics, bus_a), ReadCache(settings(), Metrics(), bus_b)
    assert b.begin() is None  # not connected yet: nothing may be stored
    for bus, cache in ((bus_a, a), (bus_b, b)):
        await bus.start()
        await cache.start()
    try:
        await wait_for(lambda: bus_a.up and bus_b.up, timeout=10, message="buses up")
        assert store(b, "page", b"P", "conv:1")
        assert store(b, "other", b"O", "conv:2")
        await a.invalidate("conv:1")
        await wait_for(lambda: b.get(("page",)) is None, timeout=5,
                       message="the bump reached instance b")
        assert b.get(("other",)) == b"O"
        assert store(b, "seen in the outage", b"S", "conv:3")

        redis_server.stop()
        await wait_for(lambda: not bus_b.up, timeout=10, message="b noticed the outage")
        assert b.get(("seen in the outage",)) is None and b.begin() is None
        redis_server.start()
        await wait_for(lambda: bus_b.up, timeout=15, message="b reconnected")
        # what was cached before the outage is never served again (bumps were missed)
        assert b.get(("other",)) is None
        assert store(b, "other", b"O2", "conv:2")
        assert b.get(("other",)) == b"O2"
    finally:
        for bus, cache in ((bus_a, a), (bus_b, b)):
            await cache.close()
            await bus.close()
