"""Rate limits per route class, per client IP and per user, with the ``limits`` library.

Each route names a class (``Route.rate_limit``; ``default`` otherwise). A class in
``[rate_limits.classes]`` has a ``per_ip`` and a ``per_user`` limit (``"10/minute"``,
``"100/hour;1000/day"``, or ``""`` for none). ``per_user`` counts the authenticated
user; on routes without a user (login, password reset) the service counts the
target account with :meth:`RateLimits.hit`.

Storage is Redis when ``redis.url`` is set (shared by all instances), memory
otherwise. When Redis fails the check falls back to per-instance memory counters for
``redis_retry_interval`` seconds (``rate_limit_fallback_total``) and never fails the
request because of the storage (fail-open).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse_many
from limits.aio import storage as aio_storage
from limits.aio import strategies
from limits.util import WindowStats

from ..errors import ConfigError, RateLimited

if TYPE_CHECKING:
    from aiohttp import web

    from ..kernel import Kernel

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[strategies.RateLimiter]] = {
    "fixed-window": strategies.FixedWindowRateLimiter,
    "moving-window": strategies.MovingWindowRateLimiter,
    "sliding-window-counter": strategies.SlidingWindowCounterRateLimiter,
}


class MemoryMovingWindow:
    """The moving-window strategy in this process's memory, exact, at a fraction of
    ``limits``' memory storage's cost (which takes an asyncio lock, builds a tracked
    object per hit, shifts a list on every hit and copies the lists from a task every
    10 ms): per key a deque of the hits' times within the window, oldest first; a hit
    drops what fell out of the window and is allowed while fewer than ``amount``
    remain. Keys idle for a whole window are forgotten, least recently hit first.
    Same answers as ``limits``' moving window (``hit``, ``get_window_stats``)."""

    def __init__(self) -> None:
        # key -> (hit times, window seconds); ordered by last hit (oldest first)
        self._logs: OrderedDict[tuple[Any, ...], tuple[deque[float], float]] = OrderedDict()

    def _log(self, item: RateLimitItem, ids: tuple[str, ...],
             now: float) -> tuple[deque[float], float]:
        self._forget_idle(now)
        key = (item.amount, item.multiples, item.GRANULARITY.seconds, ids)
        found = self._logs.get(key)
        if found is None:
            found = self._logs[key] = (deque(), float(item.get_expiry()))
        else:
            self._logs.move_to_end(key)
        times, window = found
        cutoff = now - window
        while times and times[0] <= cutoff:
            times.popleft()
        return found

    def _forget_idle(self, now: float) -> None:
        logs = self._logs
        while logs:
            times, window = next(iter(logs.values()))
            if times and times[-1] > now - window:
                return
            logs.popitem(last=False)

    async def hit(self, item: RateLimitItem, *ids: str, cost: int = 1) -> bool:
        now = time.monotonic()
        times, _ = self._log(item, ids, now)
        if len(times) + cost > item.amount:
            return False
        times.extend([now] * cost)
        return True

    async def get_window_stats(self, item: RateLimitItem, *ids: str) -> WindowStats:
        now = time.monotonic()
        times, window = self._log(item, ids, now)
        if not times:
            return WindowStats(time.time(), item.amount)
        return WindowStats(time.time() + times[0] + window - now, item.amount - len(times))

    def __len__(self) -> int:
        return len(self._logs)


@dataclass(frozen=True)
class RateClass:
    name: str
    per_ip: tuple[RateLimitItem, ...]
    per_user: tuple[RateLimitItem, ...]


def parse_limits(text: str) -> tuple[RateLimitItem, ...]:
    """``"10/minute;100/hour"`` → limit items (``""`` → none). Raises ValueError."""
    text = text.strip()
    return tuple(parse_many(text)) if text else ()


def parse_classes(table: Any) -> dict[str, RateClass]:
    classes: dict[str, RateClass] = {}
    for name, spec in dict(table or {}).items():
        spec = dict(spec)
        classes[str(name)] = RateClass(
            str(name),
            parse_limits(str(spec.get("per_ip", ""))),
            parse_limits(str(spec.get("per_user", ""))),
        )
    return classes


class RateLimits:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        s = kernel.settings.rate_limits
        self.enabled = bool(s.enabled)
        self.trust_forwarded_for = bool(s.trust_forwarded_for)
        self.retry_interval = float(s.redis_retry_interval)
        self.classes = parse_classes(s.classes)
        self.default = self.classes.get("default") or RateClass("default", (), ())
        strategy = STRATEGIES[str(s.strategy)]
        # the per-instance limiter (also Redis's stand-in while it is down): the
        # default moving window natively, the other strategies with limits' storage
        self.memory: MemoryMovingWindow | strategies.RateLimiter = (
            MemoryMovingWindow() if strategy is strategies.MovingWindowRateLimiter
            else strategy(aio_storage.MemoryStorage()))
        redis_url = str(kernel.settings.redis.url)
        self.shared: strategies.RateLimiter | None = None
        self._pool: Any = None
        if redis_url:
            self.shared = strategy(self._redis_storage(redis_url, kernel.settings.redis))
        self._shared_down_until = 0.0
        self._unknown_warned: set[str] = set()
        m = kernel.metrics
        self.hits = m.counter(
            "rate_limit_hits_total",
            "Requests counted against a rate limit",
            ("rate_class", "scope"),
        )
        self.blocked = m.counter(
            "rate_limit_blocked_total", "Requests refused with 429", ("rate_class", "scope")
        )
        self.fallbacks = m.counter(
            "rate_limit_fallback_total",
            "Rate-limit checks served from per-instance memory because Redis failed",
        )
        self.errors = m.counter(
            "rate_limit_errors_total", "Rate-limit checks skipped (fail-open) after an error"
        )
        self._hits: dict[tuple[str, str], Any] = {}

    def _redis_storage(self, url: str, redis_settings: Any) -> aio_storage.RedisStorage:
        """Redis storage on a connection pool this object owns (closed in :meth:`close`)."""
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:  # pragma: no cover - the `redis` extra is missing
            raise ConfigError(
                "setting `redis.url` is set but the redis client is not installed; "
                "pip install 'secureconnect[redis]'"
            ) from None
        from ..store.cache import blocking_pool

        # waits for a free connection (bounded) instead of failing over to memory
        self._pool = blocking_pool(url, redis_settings)
        uri = url if url.startswith("async+") else f"async+{url}"
        return aio_storage.RedisStorage(
            uri, wrap_exceptions=True, implementation="redispy", connection_pool=self._pool
        )

    def rate_class(self, name: str) -> RateClass:
        found = self.classes.get(name)
        if found is None:
            if name not in self._unknown_warned:
                self._unknown_warned.add(name)
                log.warning("rate-limit class %r is not configured; using 'default'", name)
            return self.default
        return found

    def client_ip(self, request: web.Request) -> str:
        if self.trust_forwarded_for:
            # the last entry is the one our own proxy appended; earlier ones are
            # whatever the client chose to send
            forwarded = request.headers.get("X-Forwarded-For", "")
            last = forwarded.rsplit(",", 1)[-1].strip()
            if last:
                return last
        return request.remote or "unknown"

    async def check_request(self, request: web.Request, rate_class: str, principal: Any) -> None:
        """Count the request against its class per IP and per user; 429 when over."""
        if not self.enabled:
            return
        cls = self.rate_class(rate_class)
        if cls.per_ip:
            await self._check(cls, "ip", cls.per_ip, self.client_ip(request))
        if cls.per_user and principal is not None:
            await self._check(cls, "user", cls.per_user, str(principal.user_id))

    async def hit_user(self, rate_class: str, user_id: str) -> None:
        """Count one request of ``user_id`` against the class's ``per_user`` limit —
        the same bucket :meth:`check_request` uses on a route of that class, so a
        WebSocket frame and a REST request share one limit (chat's sends)."""
        if not self.enabled:
            return
        cls = self.rate_class(rate_class)
        if cls.per_user:
            await self._check(cls, "user", cls.per_user, str(user_id))

    async def hit(self, rate_class: str, key: str) -> None:
        """Count one attempt against the class's ``per_user`` limit for ``key`` (e.g. a
        target account on login); raises :class:`RateLimited` when over."""
        if not self.enabled:
            return
        cls = self.rate_class(rate_class)
        if cls.per_user:
            await self._check(cls, "account", cls.per_user, key)

    async def _check(
        self, cls: RateClass, scope: str, items: tuple[RateLimitItem, ...], key: str
    ) -> None:
        hits = self._hits.get((cls.name, scope))
        if hits is None:
            # (.labels() takes a lock and builds a tuple: once per class and scope)
            hits = self._hits[(cls.name, scope)] = self.hits.labels(cls.name, scope)
        for item in items:
            hits.inc()
            allowed = await self._hit(item, cls.name, scope, key)
            if allowed is None or allowed:
                continue
            self.blocked.labels(cls.name, scope).inc()
            retry_after = await self._retry_after(item, cls.name, scope, key)
            raise RateLimited(
                f"too many requests for '{cls.name}' ({item.amount} per "
                f"{item.multiples} {item.GRANULARITY.name}); retry in {retry_after} s",
                retry_after=retry_after,
                rate_class=cls.name,
                scope=scope,
            )

    def _limiter(self) -> tuple[MemoryMovingWindow | strategies.RateLimiter, bool]:
        """The shared (Redis) limiter unless it failed within ``redis_retry_interval``."""
        if self.shared is not None and time.monotonic() >= self._shared_down_until:
            return self.shared, True
        return self.memory, False

    async def _hit(self, item: RateLimitItem, *ids: str) -> bool | None:
        limiter, shared = self._limiter()
        if not shared and self.shared is not None:
            self.fallbacks.inc()
        try:
            return await limiter.hit(item, *ids)
        except Exception as exc:
            if not shared:
                self.errors.inc()
                log.exception("rate-limit check failed; allowing the request")
                return None
            self._shared_down_until = time.monotonic() + self.retry_interval
            self.fallbacks.inc()
            log.warning(
                "rate-limit storage (Redis) failed (%s); using per-instance memory for %g s",
                type(exc).__name__,
                self.retry_interval,
            )
            try:
                return await self.memory.hit(item, *ids)
            except Exception:
                self.errors.inc()
                return None

    async def _retry_after(self, item: RateLimitItem, *ids: str) -> int:
        limiter, _ = self._limiter()
        try:
            stats = await limiter.get_window_stats(item, *ids)
            return max(1, int(stats.reset_time - time.time()) + 1)
        except Exception:
            return int(item.get_expiry())

    async def close(self) -> None:
        """Stop the memory storage's expiry task and close the Redis connections."""
        timer = getattr(getattr(self.memory, "storage", None), "timer", None)
        if isinstance(timer, asyncio.Task) and not timer.done():
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        if self._pool is not None:
            try:
                await self._pool.disconnect()
            except Exception:
                log.debug("closing the rate-limit Redis pool failed", exc_info=True)
