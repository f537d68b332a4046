"""The :class:`Kernel`: the one object a plugin receives.

It carries the settings, the plugin manager, the metrics registry and the shared
services (``db``, ``cache``, ``bus``, ``jobs``, ``auth``, ``ws``, ``http``,
``cassandra``). Services are constructed when the app is built and opened/closed in
aiohttp ``cleanup_ctx``; nothing here is a module-level global.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy

from . import hooks
from .metrics import HttpMetrics, Metrics

if TYPE_CHECKING:
    import aiohttp

    from .auth.ratelimit import RateLimits
    from .auth.service import AuthService
    from .health import Health
    from .jobs import JobScheduler
    from .resilience import CircuitBreaker
    from .store.bus import Bus
    from .store.cache import Cache
    from .store.cassandra import Cassandra
    from .store.readcache import ReadCache
    from .store.sql import Database
    from .ws.gateway import Gateway

log = logging.getLogger(__name__)

T = TypeVar("T")
CleanupContext = Callable[["Kernel"], AsyncIterator[None]]


class ServiceKey(Generic[T]):
    """A typed name for an interface one plugin provides and others require.

    The providing plugin declares it once in its published ``api`` module::

        CONVERSATIONS: ServiceKey[Conversations] = ServiceKey("chat.conversations")

    and both sides pass the key object, so ``kernel.require(CONVERSATIONS)`` is typed
    and the name is written in one place only.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"ServiceKey({self.name!r})"


@dataclass(frozen=True)
class Veto:
    """Returned from ``sc_message_will_be_sent`` to refuse a message."""

    reason: str
    code: str = "message_rejected"
    status: int = 422


class Kernel:
    """Shared services for the kernel and every plugin of one application."""

    # Filled while the app is built (see secureconnect.app / builtin plugins).
    db: Database
    cache: Cache
    bus: Bus
    #: repeated reads answered from memory, invalidated by version keys (store/readcache.py)
    read_cache: ReadCache
    jobs: JobScheduler
    auth: AuthService
    rate_limits: RateLimits
    ws: Gateway
    health: Health
    #: Cassandra, connected by the first plugin that calls ``await kernel.cassandra.open()``
    cassandra: Cassandra

    def __init__(self, settings: Any, pm: pluggy.PluginManager) -> None:
        self.settings = settings
        self.pm = pm
        self.hooks = pm.hook
        #: a hook's implementations in call order (secureconnect.hooks states the rule)
        self.hook_order = hooks.HookOrder(pm)
        self.trace_hooks = bool(settings.get("logging.trace_plugins", False))
        self.metrics = Metrics()
        self.http_metrics = HttpMetrics(self.metrics)
        #: per-plugin state: ``kernel.state["polls"] = ...`` (never module globals)
        self.state: dict[str, Any] = {}
        self._services: dict[str, Any] = {}
        self._http: aiohttp.ClientSession | None = None
        self._breakers: dict[str, CircuitBreaker] = {}

    # -- shared outbound HTTP client ---------------------------------------------
    @property
    def http(self) -> aiohttp.ClientSession:
        """The shared outbound ``aiohttp.ClientSession`` (timeouts from ``[outbound_http]``)."""
        if self._http is None:
            raise RuntimeError("kernel.http is available only while the app runs")
        return self._http

    # -- circuit breakers ------------------------------------------------------------
    def breaker(self, name: str, **overrides: Any) -> CircuitBreaker:
        """The circuit breaker of dependency ``name`` (one per app, created on first
        use with the ``[resilience]`` settings, or ``overrides`` the first time)."""
        from .resilience import CircuitBreaker

        found = self._breakers.get(name)
        if found is None:
            r = self.settings.resilience
            options: dict[str, Any] = {
                "failure_threshold": int(r.failure_threshold),
                "reset_timeout": float(r.reset_timeout),
                "half_open_max_calls": int(r.half_open_max_calls),
                **overrides,
            }
            found = self._breakers[name] = CircuitBreaker(name, self.metrics, **options)
        return found

    # -- documented interfaces between plugins -----------------------------------
    def provide(self, key: ServiceKey[T], service: T) -> None:
        """Publish an interface other plugins may use (while the app runs)."""
        if key.name in self._services:
            raise RuntimeError(f"service {key.name!r} is already provided")
        self._services[key.name] = service

    def withdraw(self, key: ServiceKey[Any]) -> None:
        """Stop providing ``key`` (the provider's cleanup context is closing)."""
        self._services.pop(key.name, None)

    def require(self, key: ServiceKey[T]) -> T:
        """Get an interface another plugin provides; a clear error when it is missing."""
        try:
            service = self._services[key.name]
        except KeyError:
            raise LookupError(
                f"no plugin provides {key.name!r}; enable the plugin that provides it"
            ) from None
        return service  # type: ignore[no-any-return]

    def provides(self, key: ServiceKey[Any]) -> bool:
        return key.name in self._services

    # -- calling hooks (secureconnect.hooks is the one caller) -----------------------
    async def call(self, name: str, **kwargs: Any) -> list[Any]:
        """Every implementation's result in call order; exceptions propagate."""
        return await hooks.call(self, name, **kwargs)

    async def notify(self, name: str, **kwargs: Any) -> None:
        """Call an observe-only hook; each implementation's failure is logged and
        counted in ``plugin_hook_errors_total`` and never reaches the caller."""
        await hooks.notify(self, name, **kwargs)
