"""A per-instance read cache: finished answers of repeated reads, kept in memory and
validated by version counters (issue 20: PostgreSQL's round trip capped the
authenticated reads; a repeated read must not go to the database).

Contract:

* **Versions.** A writer names what it changed with string keys
  (``"auth:user:<id>"``, ``"chat:conversation:<id>"`` …) and calls
  :meth:`ReadCache.invalidate` *after its commit*. Every call takes the next value of one
  instance-wide counter and records it as those keys' version. An entry remembers the
  counter's value when its read began (:meth:`ReadCache.begin`, taken *before* the
  database is read) and the keys it was built from; it is a miss as soon as any of them
  has a version above that value. A write that commits while a read is in flight
  therefore always leaves that read's entry invalid (its version is newer than the
  read's start), whichever finishes first.
* **Other instances** learn the keys through the bus (topic ``sc:readcache``), and every
  instance listens. While the bus is down, or was down at any moment since an entry's
  read began (the bus's ``epoch`` moved), the cache serves nothing and stores nothing:
  reads go to the database. An entry older than ``ttl`` is a miss anyway, which bounds
  how long another instance can serve a stale answer if a bus message is lost.
* **Bounds.** At most ``max_entries`` entries and ``max_bytes`` bytes (least recently
  used first out); the version table holds at most ``max_versions`` keys — past it, it is
  emptied and every key reads as the counter's current value, which invalidates exactly
  the entries that a forgotten version could have invalidated.
* **Authorization is never cached here by a caller's identity alone**: entries hold
  answers; who may read them is checked per request by the caller (see the routes).

Metrics: ``read_cache_hits_total{kind}``, ``read_cache_misses_total{kind}``
(``kind``: the first part of the entry's key), ``read_cache_invalidations_total``
(keys bumped here or by another instance), ``read_cache_entries``, ``read_cache_bytes``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..ids import new_id_str

if TYPE_CHECKING:
    from ..metrics import Metrics
    from .bus import Bus, Subscription

log = logging.getLogger(__name__)

#: bus topic carrying bumped keys to every instance
BUS_TOPIC = "sc:readcache"
#: bytes counted per entry beyond its value (key, deps, bookkeeping)
ENTRY_OVERHEAD = 200

#: a cache key: a tuple whose first item names the kind of read (``("auth.me", uid)``)
Key = tuple[Hashable, ...]


@dataclass(frozen=True, slots=True)
class Stamp:
    """When a read began: the version counter, the bus epoch and the clock."""

    clock: int
    epoch: int
    at: float


@dataclass(slots=True)
class _Entry:
    value: Any
    deps: tuple[str, ...]
    clock: int
    epoch: int
    expires: float
    size: int


class ReadCache:
    def __init__(self, settings: Any, metrics: Metrics, bus: Bus) -> None:
        self.enabled = bool(settings.enabled)
        self.ttl = float(settings.ttl)
        self.max_entries = int(settings.max_entries)
        self.max_bytes = int(settings.max_bytes)
        self.max_versions = int(settings.max_versions)
        self.bus = bus
        self.instance = new_id_str().encode()
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._versions: dict[str, int] = {}
        self._clock = 0
        self._floor = 0  # the version of every key not in _versions
        self._bytes = 0
        self._subscription: Subscription | None = None
        self._hits = metrics.counter("read_cache_hits_total",
                                     "Reads answered from the read cache", ("kind",))
        self._misses = metrics.counter("read_cache_misses_total",
                                       "Reads the read cache could not answer", ("kind",))
        self._children: dict[tuple[bool, Hashable], Any] = {}
        self._invalidations = metrics.counter(
            "read_cache_invalidations_total",
            "Keys whose version moved (a write here or on another instance)")
        metrics.gauge("read_cache_entries", "Entries in the read cache").set_function(
            lambda: len(self._entries))
        metrics.gauge("read_cache_bytes", "Bytes the read cache counts for its entries"
                      ).set_function(lambda: self._bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # -- reading ---------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """Entries may be served and stored now (enabled, the bus receiving)."""
        return self.enabled and self.bus.up

    def begin(self) -> Stamp | None:
        """Take before reading the database; ``None`` when nothing may be stored."""
        if not self.usable:
            return None
        return Stamp(self._clock, self.bus.epoch, time.monotonic())

    def get(self, key: Key) -> Any | None:
        """The entry's value when it is still valid, else ``None`` (counted)."""
        entry = self._entries.get(key)
        if entry is not None:
            if self._valid(entry):
                self._entries.move_to_end(key)
                self._count(True, key)
                return entry.value
            self._drop(key)
        if self.enabled:
            self._count(False, key)
        return None

    def put(self, key: Key, value: Any, deps: Iterable[str], stamp: Stamp | None,
            size: int | None = None) -> bool:
        """Store ``value`` read since ``stamp`` from what ``deps`` name; refused (``False``)
        when one of them changed meanwhile, the bus went down, or it is too large."""
        if stamp is None or not self.usable or self.bus.epoch != stamp.epoch:
            return False
        deps = tuple(deps)
        versions, floor = self._versions, self._floor
        if floor > stamp.clock or any(versions.get(d, 0) > stamp.clock for d in deps):
            return False
        if size is None:
            size = len(value) if isinstance(value, bytes | str) else 64
        size += ENTRY_OVERHEAD + 64 * len(deps)
        if size > self.max_bytes:
            return False
        self._drop(key)
        self._entries[key] = _Entry(value, deps, stamp.clock, stamp.epoch,
                                    stamp.at + self.ttl, size)
        self._bytes += size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return True

    async def fetch(self, key: Key,
                    build: Callable[[], Awaitable[tuple[Any, Iterable[str]]]]) -> Any:
        """The cached value of ``key``, or ``build()``'s ``(value, deps)`` stored."""
        value = self.get(key)
        if value is not None:
            return value
        stamp = self.begin()
        value, deps = await build()
        self.put(key, value, deps, stamp)
        return value

    def _valid(self, entry: _Entry) -> bool:
        if not self.enabled or not self.bus.up or self.bus.epoch != entry.epoch:
            return False
        if time.monotonic() >= entry.expires or self._floor > entry.clock:
            return False
        versions, clock = self._versions, entry.clock
        for dep in entry.deps:  # noqa: SIM110 (a loop: no generator on every hit)
            if versions.get(dep, 0) > clock:
                return False
        return True

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def _count(self, hit: bool, key: Key) -> None:
        kind = key[0] if key else ""
        child = self._children.get((hit, kind))
        if child is None:  # kinds are a handful of names: bounded
            child = self._children[(hit, kind)] = (
                self._hits if hit else self._misses).labels(str(kind))
        child.inc()

    # -- writing ---------------------------------------------------------------------------
    def invalidate_local(self, keys: Iterable[str]) -> None:
        """Move the versions of ``keys`` on this instance only."""
        if not self.enabled:
            return
        self._clock += 1
        clock, versions = self._clock, self._versions
        count = 0
        for key in keys:
            versions[key] = clock
            count += 1
        if count:
            self._invalidations.inc(count)
        if len(versions) > self.max_versions:
            # forgetting versions is safe once every key reads as "changed now"
            versions.clear()
            self._floor = clock

    async def invalidate(self, *keys: str) -> None:
        """After a commit: move the versions of ``keys`` here and on every instance
        (through the bus; never raises, a lost message is bounded by ``ttl``)."""
        if not self.enabled or not keys:
            return
        self.invalidate_local(keys)
        if self.bus.spans_instances:
            payload = b"\n".join([self.instance, *(k.encode() for k in keys)])
            await self.bus.post(BUS_TOPIC, payload)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    # -- across instances ------------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled and self.bus.spans_instances:
            self._subscription = await self.bus.subscribe(BUS_TOPIC, self._on_bus)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        self.clear()

    def _on_bus(self, _topic: str, message: bytes) -> None:
        origin, _, rest = message.partition(b"\n")
        if origin == self.instance or not rest:
            return  # this instance bumped them already
        self.invalidate_local(k.decode() for k in rest.split(b"\n"))


__all__ = ["BUS_TOPIC", "ReadCache", "Stamp"]
