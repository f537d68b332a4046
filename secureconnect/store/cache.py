"""Cache: Redis when configured, an in-process TTL store otherwise or while Redis is down.

API (all async): ``get``, ``set(ttl=)``, ``delete``, ``incr(ttl=)``, ``set_if_absent(ttl=)``,
``expire``, ``ping``. Values are ``str``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from ..metrics import Metrics

log = logging.getLogger(__name__)
T = TypeVar("T")
# Retried errors: connection trouble and timeouts (redis-py's errors derive from these
# or from redis.exceptions.ConnectionError, itself an OSError-like RedisError).
_TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)
try:  # the redis extra is optional
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import TimeoutError as _RedisTimeout

    _TRANSIENT += (_RedisConnectionError, _RedisTimeout)
except ImportError:  # pragma: no cover - without the extra there is no Redis to retry
    pass


def blocking_pool(url: str, settings: Any, **kwargs: Any) -> Any:
    """A Redis connection pool of ``max_connections`` that makes a caller *wait* (up to
    ``socket_timeout``) for a free connection instead of raising at once: a burst (a
    mass disconnect updating presence) is a queue, not an outage."""
    from redis.asyncio import BlockingConnectionPool

    timeout = float(settings.socket_timeout)
    return BlockingConnectionPool.from_url(
        url, max_connections=int(settings.max_connections), timeout=timeout,
        socket_timeout=timeout, socket_connect_timeout=timeout,
        connection_class=cancel_safe_connection_class(url), **kwargs)


_CANCEL_SAFE: dict[str, type[Any]] = {}


def cancel_safe_connection_class(url: str) -> type[Any]:
    """The redis-py connection class for ``url`` (TCP, TLS or Unix socket) whose
    command send never swallows a cancellation.

    redis-py bounds a send with ``asyncio.wait_for(send, socket_timeout)``. On Python
    3.11, ``wait_for`` *returns* the inner result when the caller is cancelled after the
    send finished but before ``wait_for`` woke up (fixed in 3.12): the command then
    completes and the task goes on as if never cancelled. A loop stopped by one
    ``cancel()`` (a job, the bus sender) kept running, and whoever awaited it waited
    forever. Here a cancel that arrived during the send is raised once the send
    returns, and the connection, whose reply will not be read, is dropped."""
    from redis.asyncio.connection import (
        Connection,
        SSLConnection,
        UnixDomainSocketConnection,
    )

    scheme = url.split("://", 1)[0].lower()
    base: type[Any] = {"rediss": SSLConnection, "unix": UnixDomainSocketConnection}.get(
        scheme, Connection)
    found = _CANCEL_SAFE.get(base.__name__)
    if found is None:

        async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
            task = asyncio.current_task()
            cancels = task.cancelling() if task is not None else 0
            await base.send_packed_command(self, command, check_health)
            if task is not None and task.cancelling() > cancels:
                with contextlib.suppress(Exception):
                    await self.disconnect(nowait=True)
                raise asyncio.CancelledError

        found = _CANCEL_SAFE[base.__name__] = type(
            f"CancelSafe{base.__name__}", (base,),
            {"send_packed_command": send_packed_command, "__module__": __name__})
    return found


class MemoryStore:
    """A bounded in-process key/value store with per-key expiry."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._data: dict[str, tuple[str, float | None]] = {}
        self.max_keys = max_keys

    def _live(self, key: str) -> tuple[str, float | None] | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item

    def _evict(self) -> None:
        if len(self._data) < self.max_keys:
            return
        now = time.monotonic()
        for k in [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]:
            del self._data[k]
        while len(self._data) >= self.max_keys:  # oldest insertion first
            del self._data[next(iter(self._data))]

    def get(self, key: str) -> str | None:
        item = self._live(key)
        return None if item is None else item[0]

    def set(self, key: str, value: str, ttl: float | None) -> None:
        self._evict()
        self._data[key] = (value, None if ttl is None else time.monotonic() + ttl)

    def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    def set_if_absent(self, key: str, value: str, ttl: float | None) -> bool:
        if self._live(key) is not None:
            return False
        self.set(key, value, ttl)
        return True

    def incr(self, key: str, amount: int, ttl: float | None) -> int:
        item = self._live(key)
        if item is None:
            self.set(key, str(amount), ttl)
            return amount
        value = int(item[0]) + amount
        self._data[key] = (str(value), item[1])
        return value

    def expire(self, key: str, ttl: float) -> bool:
        item = self._live(key)
        if item is None:
            return False
        self._data[key] = (item[0], time.monotonic() + ttl)
        return True

    def ttl(self, key: str) -> float | None:
        item = self._live(key)
        if item is None or item[1] is None:
            return None
        return max(0.0, item[1] - time.monotonic())

    def items(self) -> list[tuple[str, str, float | None]]:
        return [(k, v, self.ttl(k)) for k, (v, _) in list(self._data.items()) if self._live(k)]

    def clear(self) -> None:
        self._data.clear()


class Cache:
    """The kernel cache: Redis when ``redis.url`` is set, the in-process store otherwise.

    With Redis configured, a failed command (after bounded retries with jittered
    backoff) marks Redis *down*: from then on operations are served from the memory
    store at once (``redis_fallback_total{operation}``), values written there live at
    most ``redis.fallback_ttl`` seconds, and a background probe pings Redis. When it
    answers again the keys written during the outage are copied back
    (``redis_sync_operations_total``) and Redis serves again. No Redis error reaches
    the caller. See docs/stores.md for what each kind of security state keeps.
    """

    def __init__(self, settings: Any, metrics: Metrics) -> None:
        self.settings = settings
        self.url = str(settings.url or "")
        self.memory = MemoryStore(int(settings.fallback_max_keys))
        self.fallback_ttl = float(settings.fallback_ttl)
        self._redis: Any = None
        self._up = True
        self._dirty: dict[str, None] = {}
        self._probe: asyncio.Task[None] | None = None
        self.fallbacks = metrics.counter(
            "redis_fallback_total", "Cache operations served from memory", ("operation",))
        self.available = metrics.gauge("redis_available", "1 while Redis answers")
        self.syncs = metrics.counter(
            "redis_sync_operations_total", "Keys re-synced to Redis after an outage")
        self.retries = metrics.counter("redis_retry_total", "Redis commands retried")
        self.retry_failures = metrics.counter(
            "redis_retry_failed_total", "Redis commands that failed after every retry")

    @property
    def shared(self) -> bool:
        """True when the cache is shared between instances (Redis configured)."""
        return bool(self.url)

    @property
    def redis_up(self) -> bool:
        return self._redis is not None and self._up

    async def start(self) -> None:
        if not self.url:
            return
        import redis.asyncio as aioredis

        s = self.settings
        pool = blocking_pool(self.url, s, decode_responses=True)
        self._redis = aioredis.Redis.from_pool(pool)  # type: ignore[attr-defined]
        try:
            await self._redis.ping()
            self.available.set(1)
        except Exception:
            self._mark_down()

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def ping(self) -> None:
        """Raises when Redis does not answer. A pooled connection Redis closed (a
        restart) fails on first use and is dropped: one more try on a fresh one, so
        readiness does not flap once after every recovery."""
        if self._redis is None:
            return
        try:
            await self._redis.ping()
        except _TRANSIENT:
            await self._redis.ping()

    # -- the fallback machinery ------------------------------------------------------
    def _mark_down(self) -> None:
        self._up = False
        self.available.set(0)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._recover(), name="redis-probe")

    async def _recover(self) -> None:
        delay = 0.2
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                await self._redis.ping()
                await self._resync()
            except Exception:
                continue
            self._up = True
            self.available.set(1)
            log.warning("Redis is back; cache served from Redis again")
            return

    async def _resync(self) -> None:
        for key in list(self._dirty):
            value = self.memory.get(key)
            if value is None:
                await self._redis.delete(key)
            else:
                ttl = self.memory.ttl(key)
                px = None if ttl is None else max(1, int(ttl * 1000))
                await self._redis.set(key, value, px=px)
            self._dirty.pop(key, None)
            self.memory.delete(key)
            self.syncs.inc()

    async def _run(self, operation: str, command: Callable[[Any], Awaitable[T]],
                   fallback: Callable[[], T], *, writes: str | None = None) -> T:
        if self._redis is None:
            return fallback()
        if self._up:
            attempts = int(self.settings.retry_attempts)
            base = float(self.settings.retry_base_delay)
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(attempts),
                    wait=wait_exponential(multiplier=base, max=base * 8) + wait_random(0, base),
                    retry=retry_if_exception_type(_TRANSIENT),
                    before_sleep=lambda _state: self.retries.inc(),
                    reraise=True,
                ):
                    with attempt:
                        return await command(self._redis)
            except Exception as exc:
                self.retry_failures.inc()
                log.warning("Redis %s failed (%s); serving the cache from memory",
                            operation, type(exc).__name__)
                self._mark_down()
        self.fallbacks.labels(operation).inc()
        if writes is not None:
            self._dirty[writes] = None
        return fallback()

    def _ttl(self, ttl: float | None) -> float:
        return self.fallback_ttl if ttl is None else min(ttl, self.fallback_ttl)

    # -- the API -----------------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        async def command(r: Any) -> str | None:
            value: str | None = await r.get(key)
            return value

        return await self._run("get", command, lambda: self.memory.get(key))

    async def get_many(self, *keys: str) -> list[str | None]:
        """The values of ``keys`` in one round trip (``MGET``), ``None`` where absent."""
        async def command(r: Any) -> list[str | None]:
            values: list[str | None] = await r.mget(keys)
            return values

        return await self._run("get", command, lambda: [self.memory.get(k) for k in keys])

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        async def command(r: Any) -> None:
            await r.set(key, value, px=None if ttl is None else max(1, int(ttl * 1000)))

        await self._run("set", command,
                        lambda: self.memory.set(key, value, self._ttl(ttl)), writes=key)

    async def delete(self, key: str) -> bool:
        async def command(r: Any) -> bool:
            return bool(await r.delete(key))

        return await self._run("delete", command, lambda: self.memory.delete(key), writes=key)

    async def set_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        async def command(r: Any) -> bool:
            px = None if ttl is None else max(1, int(ttl * 1000))
            return bool(await r.set(key, value, nx=True, px=px))

        return await self._run(
            "set_if_absent", command,
            lambda: self.memory.set_if_absent(key, value, self._ttl(ttl)), writes=key)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        async def command(r: Any) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.incrby(key, amount)
            if ttl is not None:
                pipe.pexpire(key, max(1, int(ttl * 1000)), nx=True)
            result = await pipe.execute()
            return int(result[0])

        return await self._run("incr", command,
                               lambda: self.memory.incr(key, amount, self._ttl(ttl)), writes=key)

    async def expire(self, key: str, ttl: float) -> bool:
        async def command(r: Any) -> bool:
            return bool(await r.pexpire(key, max(1, int(ttl * 1000))))

        return await self._run("expire", command,
                               lambda: self.memory.expire(key, self._ttl(ttl)), writes=key)
