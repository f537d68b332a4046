"""The cache and the bus, on memory and on a real Redis that is really stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
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
    # several keys in one round trip: values in order, None where absent
    assert await cache.get_many("k", "absent", "k") == ["v", None, "v"]
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


async def _lost_cancellations(operation: Callable[[], Awaitable[Any]],
                              turns: int = 16) -> list[int]:
    """Run ``operation`` in a task cancelled after 0, 1, 2, … loop turns: the turns at
    which the task, cancelled before it had finished, still returned normally."""
    lost = []
    for turn in range(turns):
        task = asyncio.ensure_future(operation())
        for _ in range(turn):
            await asyncio.sleep(0)
        if task.done():  # finished before the cancel: there was nothing to lose
            await task
            continue
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
            lost.append(turn)
    return lost


async def test_a_cancelled_redis_command_raises_and_leaves_no_stray_reply(
        redis_server: Any) -> None:
    """Python 3.11's ``wait_for`` (redis-py's send timeout) returned a finished send to
    a task cancelled meanwhile: the command completed as if the cancel never came, so a
    loop stopped by one cancel ran on (the two-instance jobs test hung at shutdown)."""
    cache = Cache(_settings(redis_server.url).redis, Metrics())
    await cache.start()
    bus = RedisBus(redis_server.url, Metrics(), socket_timeout=0.5)
    try:
        await cache.set("k", "v")
        await cache.set("other", "o")
        assert await _lost_cancellations(lambda: cache.get("k")) == []
        assert await _lost_cancellations(lambda: cache.set_if_absent("k", "x")) == []
        assert await _lost_cancellations(lambda: bus._redis.get("k")) == []
        # a connection cut between its send and its reply was dropped, not reused: every
        # answer below is its own command's
        for _ in range(5):
            assert [await cache.get("k"), await cache.get("other")] == ["v", "o"]
            assert await bus._redis.get("other") == b"o"
        assert cache.redis_up
    finally:
        await cache.close()
        await bus._redis.aclose()


async def test_cache_falls_back_to_memory_and_resyncs(redis_server: Any) -> None:
    metrics = Metrics()
    cache = Cache(_settings(redis_server.url).redis, metrics)
    await cache.start()
    try:
        await cache.set("before", "1")
        redis_server.stop()
        await cache.set("during", "2", ttl=60)  # no exception reaches the caller
        assert await cache.get("during") == "2"
        assert await cache.get_many("during", "never") == ["2", None]
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


@contextlib.asynccontextmanager
async def _two_instances(url: str) -> AsyncIterator[Any]:
    """Two Redis buses (instances A and B) on one Redis, both subscribed to ``room``:
    ``got_a`` is what reaches A, ``local_b`` what B's own subscriber sees."""
    pair = SimpleNamespace(metrics_b=Metrics(), got_a=[], local_b=[])
    pair.a = create_bus(_settings(url), Metrics())
    pair.b = create_bus(_settings(url), pair.metrics_b)
    await pair.a.start()
    await pair.b.start()
    try:
        await pair.a.subscribe("room", lambda t, m: pair.got_a.append(m))
        await pair.b.subscribe("room", lambda t, m: pair.local_b.append(m))
        yield pair
    finally:
        await pair.a.close()
        await pair.b.close()


async def test_bus_across_instances_survives_a_redis_restart(redis_server: Any) -> None:
    async with _two_instances(redis_server.url) as pair:

        async def delivered(payload: bytes) -> bool:
            await pair.b.publish("room", payload)
            return payload in pair.got_a

        await wait_for(lambda: delivered(b"one"), timeout=10, interval=0.2,
                       message="cross-instance delivery")
        redis_server.stop()
        await pair.b.publish("room", b"during")  # counted, not raised; local delivered
        assert b"during" in pair.local_b
        assert pair.metrics_b.value("bus_publish_errors_total") >= 1
        redis_server.start()
        await wait_for(lambda: delivered(b"after"), timeout=15, interval=0.3,
                       message="delivery after Redis restart")


def test_in_process_bus_without_redis() -> None:
    assert isinstance(create_bus(_settings(""), Metrics()), InProcessBus)


async def test_posts_reach_other_instances_in_post_order(redis_server: Any) -> None:
    """Posting returns before Redis has the message; a burst still arrives whole and
    in order at the other instance (one pipeline per burst, one sender)."""
    async with _two_instances(redis_server.url) as pair:
        got, local = pair.got_a, pair.local_b

        async def reachable() -> bool:
            await pair.b.publish("room", b"probe")
            return b"probe" in got

        await wait_for(reachable, timeout=10, interval=0.2, message="a subscribed")
        got.clear()
        local.clear()
        outcomes = [await pair.b.post("room", str(n).encode()) for n in range(1000)]
        # this instance's subscribers had each message when its post returned
        assert local == [str(n).encode() for n in range(1000)]
        assert await asyncio.gather(*outcomes) == [True] * 1000
        # (a probe published before the clear may still arrive after it)
        burst = lambda: [m for m in got if m != b"probe"]  # noqa: E731
        await wait_for(lambda: len(burst()) >= 1000, timeout=10, message="the burst arrived")
        assert burst() == [str(n).encode() for n in range(1000)]


async def test_a_full_publish_queue_fails_at_once_and_is_counted(redis_server: Any) -> None:
    metrics = Metrics()
    bus = create_bus(make_settings({"redis": {"url": redis_server.url, "publish_queue": 3}}),
                     metrics)
    assert isinstance(bus, RedisBus)
    await bus.start()
    local: list[bytes] = []
    try:
        await bus.subscribe("room", lambda t, m: local.append(m))
        # no await that yields in between: the sender cannot drain the queue meanwhile
        outcomes = [await bus.post("room", str(n).encode()) for n in range(10)]
        assert [o.done() for o in outcomes] == [False] * 3 + [True] * 7
        assert await asyncio.gather(*outcomes) == [True] * 3 + [False] * 7
        assert metrics.value("bus_publish_errors_total") == 7
        assert len(local) == 10  # local delivery never depends on Redis
        # what waits when the bus closes still leaves; a post after it fails at once
        pending = await bus.post("room", b"last")
    finally:
        await bus.close()
    assert pending.done() and pending.result() is True
    late = await bus.post("room", b"late")
    assert late.done() and late.result() is False
    assert metrics.value("bus_publish_errors_total") == 8


async def test_posts_while_redis_is_down_fail_without_holding_up_the_caller(
        redis_server: Any) -> None:
    metrics = Metrics()
    bus = create_bus(_settings(redis_server.url), metrics)
    await bus.start()
    local: list[bytes] = []
    try:
        await bus.subscribe("room", lambda t, m: local.append(m))
        redis_server.stop()
        outcomes = [await bus.post("room", b"%d" % n) for n in range(5)]
        assert len(local) == 5
        assert await asyncio.wait_for(asyncio.gather(*outcomes), 10) == [False] * 5
        assert metrics.value("bus_publish_errors_total") == 5
        redis_server.start()
        await wait_for(lambda: _posted(bus), timeout=15, interval=0.3,
                       message="publishing again after Redis came back")
    finally:
        await bus.close()


async def _posted(bus: Any) -> bool:
    # bounded: a publish result that never comes fails the wait_for above, not the run
    try:
        return bool(await asyncio.wait_for(await bus.post("other", b"x"), 3))
    except TimeoutError:
        return False
