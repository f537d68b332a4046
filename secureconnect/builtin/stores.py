"""Kernel plugin ``stores``: database, cache, bus, jobs and the outbound HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from dynaconf import Validator

from .. import hookimpl
from ..health import HealthCheck
from ..kernel import Kernel

CONSISTENCY_LEVELS = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM",
                      "LOCAL_ONE")


@hookimpl(trylast=True)
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("database.url", is_type_of=str, len_min=1),
        Validator("database.pool_size", is_type_of=int, gte=1, lte=500),
        Validator("database.max_overflow", is_type_of=int, gte=0, lte=500),
        Validator("database.pool_recycle", is_type_of=int, gte=1),
        Validator("database.pool_pre_ping", is_type_of=bool),
        Validator("database.acquire_timeout", is_type_of=(int, float), gt=0, lte=60),
        Validator("database.query_timeout", is_type_of=(int, float), gt=0, lte=600),
        Validator("database.auto_migrate", is_type_of=bool),
        Validator("database.echo", is_type_of=bool),
        Validator("redis.url", is_type_of=str),
        Validator("redis.fallback_ttl", is_type_of=(int, float), gt=0, lte=86400),
        Validator("redis.fallback_max_keys", is_type_of=int, gte=100),
        Validator("redis.socket_timeout", is_type_of=(int, float), gt=0, lte=60),
        Validator("redis.retry_attempts", is_type_of=int, gte=1, lte=10),
        Validator("redis.retry_base_delay", is_type_of=(int, float), gte=0, lte=5),
        Validator("redis.max_connections", is_type_of=int, gte=1, lte=10000),
        Validator("redis.publish_queue", is_type_of=int, gte=1, lte=1_000_000),
        Validator("cache.enabled", is_type_of=bool),
        Validator("cache.ttl", is_type_of=(int, float), gt=0, lte=3600),
        Validator("cache.max_entries", is_type_of=int, gte=1, lte=10_000_000),
        Validator("cache.max_bytes", is_type_of=int, gte=1024),
        Validator("cache.max_versions", is_type_of=int, gte=100),
        Validator("cassandra.contact_points", is_type_of=list, len_min=1),
        Validator("cassandra.port", is_type_of=int, gte=1, lte=65535),
        Validator("cassandra.keyspace", is_type_of=str, len_min=1, len_max=48),
        Validator("cassandra.replication", is_type_of=dict),
        Validator("cassandra.local_dc", is_type_of=str),
        Validator("cassandra.consistency", is_in=CONSISTENCY_LEVELS),
        Validator("cassandra.serial_consistency", is_in=("SERIAL", "LOCAL_SERIAL")),
        Validator("cassandra.protocol_version", is_type_of=int, gte=3, lte=5),
        Validator("cassandra.username", is_type_of=str),
        Validator("cassandra.password", is_type_of=str),
        Validator("cassandra.query_timeout", is_type_of=(int, float), gt=0, lte=600),
        Validator("cassandra.connect_timeout", is_type_of=(int, float), gt=0, lte=60),
        Validator("cassandra.reconnect_max_delay", is_type_of=(int, float), gt=0, lte=600),
        Validator("cassandra.max_concurrent_requests", is_type_of=int, gte=1, lte=100_000),
        Validator("cassandra.retry_attempts", is_type_of=int, gte=1, lte=10),
        Validator("cassandra.retry_base_delay", is_type_of=(int, float), gte=0, lte=5),
        Validator("resilience.failure_threshold", is_type_of=int, gte=1, lte=1000),
        Validator("resilience.reset_timeout", is_type_of=(int, float), gt=0, lte=3600),
        Validator("resilience.half_open_max_calls", is_type_of=int, gte=1, lte=1000),
        Validator("jobs.enabled", is_type_of=bool),
        Validator("jobs.jitter", is_type_of=(int, float), gte=0, lte=0.5),
        Validator("jobs.default_timeout", is_type_of=(int, float), gt=0),
        Validator("outbound_http.connect_timeout", is_type_of=(int, float), gt=0, lte=60),
        Validator("outbound_http.read_timeout", is_type_of=(int, float), gt=0, lte=600),
        Validator("outbound_http.total_timeout", is_type_of=(int, float), gt=0, lte=600),
        Validator("outbound_http.max_connections", is_type_of=int, gte=1, lte=10000),
    ]


async def _database(kernel: Kernel) -> AsyncIterator[None]:
    await kernel.db.start()
    try:
        if kernel.settings.database.auto_migrate:
            from ..store.schema import migrate

            await migrate(kernel, external=False)
        yield
    finally:
        await kernel.db.close()


async def _cache(kernel: Kernel) -> AsyncIterator[None]:
    await kernel.cache.start()
    yield
    await kernel.cache.close()


async def _bus(kernel: Kernel) -> AsyncIterator[None]:
    await kernel.bus.start()
    yield
    await kernel.bus.close()


async def _read_cache(kernel: Kernel) -> AsyncIterator[None]:
    await kernel.read_cache.start()  # listens on the bus: opened after it, closed before
    yield
    await kernel.read_cache.close()


def _outbound_metrics(kernel: Kernel) -> aiohttp.TraceConfig:
    """``outbound_http_requests_total{result}``: ok (any status), timeout, error — the
    outbound-call timeout ratio alert divides the first two."""
    requests = kernel.metrics.counter(
        "outbound_http_requests_total", "Outbound HTTP calls by outcome", ("result",))
    trace = aiohttp.TraceConfig()

    async def ended(_session: Any, _ctx: Any, _params: Any) -> None:
        requests.labels("ok").inc()

    async def failed(_session: Any, _ctx: Any, params: Any) -> None:
        timeout = isinstance(params.exception, asyncio.TimeoutError | TimeoutError)
        requests.labels("timeout" if timeout else "error").inc()

    trace.on_request_end.append(ended)
    trace.on_request_exception.append(failed)
    return trace


async def _outbound_http(kernel: Kernel) -> AsyncIterator[None]:
    s = kernel.settings.outbound_http
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=float(s.total_timeout),
            sock_connect=float(s.connect_timeout),
            sock_read=float(s.read_timeout),
        ),
        connector=aiohttp.TCPConnector(limit=int(s.max_connections)),
        trace_configs=[_outbound_metrics(kernel)],
    )
    kernel._http = session
    try:
        yield
    finally:
        kernel._http = None
        await session.close()


@hookimpl(tryfirst=True)
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_database, _cache, _bus, _read_cache, _outbound_http]


@hookimpl
def sc_health_checks(kernel: Kernel) -> list[HealthCheck]:
    checks = [HealthCheck("database", kernel.db.ping)]
    if kernel.cache.shared:
        # the service works without Redis (memory fallbacks, local delivery): degraded
        checks.append(HealthCheck("redis", kernel.cache.ping, required=False))
    return checks
