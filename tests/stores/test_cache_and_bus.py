"""The cache and the bus, on memory and on a real Redis that is really stopped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secureconnect.metrics import Metrics
from secureconnect.store.bus import InProcessBus, RedisBus, create_bus
from secureconnect.store.cache import Cache
from secureconnect.testing import make_settings, wait_for


def _settings(redis_url: str = "") -> Any:
    return make_settings({"redis": {"url": redis_url, "socket_timeout": 0.5,
                                    "retry_attempts": 2, "retry_base_delay": 0.01}})


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> Any:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else ""
    c = Cache(_settings(url).redis, Metrics())
    await c.start()
    yield c
    await c.close()


async def test_cache_api(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", "v", ttl=10)
    assert await cache.get("k") == "v"
    assert await cache.set_if_absent("k", "other") is False
    assert await cache.set_if_absent("fresh", "1", ttl=10) is True
    assert await cache.incr("n", 2, ttl=10) == 2
    assert await cache.incr("n") == 3
    assert await cache.expire("n", 0.05) is True

    async def gone() -> bool:
        return await cache.get("n") is None

    await wait_for(gone, timeout=3, message="key expiry")
    assert await cache.delete("k") is True
    assert await cache.get("k") is None


async def test_cache_falls_back_to_memory_and_resyncs(redis_server: Any) -> None:
    metrics = Metrics()
    cache = Cache(_settings(redis_server.url).redis, metrics)
    await cache.start()
    try:
        await cache.set("before", "1")
        redis_server.stop()
        await cache.set("during", "2", ttl=60)  # no exception reaches the caller
        assert await cache.get("during") == "2"
        assert await cache.incr("count") == 1
        assert metrics.value("redis_fallback_total", {"operation": "set"}) >= 1
        assert metrics.value("redis_available") == 0
        redis_server.start()
        await wait_for(lambda: cache.redis_up, timeout=10, message="Redis recovery")
        assert metrics.value("redis_sync_operations_total") >= 2
        assert metrics.value("redis_available") == 1
        # what was written during the outage now lives in Redis itself
        import redis.asyncio as aioredis

        direct = aioredis.from_url(redis_server.url, decode_responses=True)
        assert await direct.get("during") == "2"
        assert 0 < await direct.ttl("during") <= 30  # bounded by redis.fallback_ttl
        await direct.aclose()
    finally:
        await cache.close()


@pytest.fixture(params=["memory", "redis"])
def bus_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("redis_server").url if request.param == "redis" else ""


async def test_bus_local_delivery_exactly_once(bus_url: str) -> None:
    bus = create_bus(_settings(bus_url), Metrics())
    assert isinstance(bus, RedisBus) == bool(bus_url)
    await bus.start()
    got: list[bytes] = []
    try:
        sub1 = await bus.subscribe("t", lambda topic, m: got.append(m))
        sub2 = await bus.subscribe("t", lambda topic, m: got.append(m))
        await bus.publish("t", b"hello")
        await wait_for(lambda: len(got) == 2, message="two local deliveries")
        await asyncio.sleep(0.2)  # an echo from Redis would arrive within this time
        assert got == [b"hello", b"hello"]
        await sub1.close()
        await sub2.close()
        assert bus.topics() == []
    finally:
        await bus.close()


async def test_bus_across_instances_survives_a_redis_restart(redis_server: Any) -> None:
    a = create_bus(_settings(redis_server.url), Metrics())
    metrics_b = Metrics()
    b = create_bus(_settings(redis_server.url), metrics_b)
    await a.start()
    await b.start()
    got_a: list[bytes] = []
    local_b: list[bytes] = []
    try:
        await a.subscribe("room", lambda t, m: got_a.append(m))
        await b.subscribe("room", lambda t, m: local_b.append(m))

        async def delivered(payload: bytes) -> bool:
            await b.publish("room", payload)
            return payload in got_a

        await wait_for(lambda: delivered(b"one"), timeout=10, interval=0.2,
                       message="cross-instance delivery")
        redis_server.stop()
        await b.publish("room", b"during")  # counted, not raised; local still delivered
        assert b"during" in local_b
        assert metrics_b.value("bus_publish_errors_total") >= 1
        redis_server.start()
        await wait_for(lambda: delivered(b"after"), timeout=15, interval=0.3,
                       message="delivery after Redis restart")
    finally:
        await a.close()
        await b.close()


def test_in_process_bus_without_redis() -> None:
    assert isinstance(create_bus(_settings(""), Metrics()), InProcessBus)
