"""Retries, circuit breakers and the shared outbound HTTP client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from secureconnect import RouteTable, hookimpl
from secureconnect.app import KERNEL
from secureconnect.http.handlers import json_response
from secureconnect.metrics import Metrics
from secureconnect.resilience import CircuitBreaker, CircuitOpenError, retry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def fail() -> None:
    raise ConnectionError("down")


async def ok() -> str:
    return "ok"


async def test_breaker_opens_half_opens_and_closes() -> None:
    clock, metrics = Clock(), Metrics()
    breaker = CircuitBreaker("push", metrics, failure_threshold=3, reset_timeout=10,
                             clock=clock)
    state = lambda: metrics.value("circuit_breaker_state", {"service": "push"})  # noqa: E731
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert breaker.state == "closed" and state() == 0
    assert await breaker.call(ok) == "ok"  # a success resets the count
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert breaker.state == "open" and state() == 1
    with pytest.raises(CircuitOpenError) as refused:
        await breaker.call(ok)
    assert refused.value.status == 503 and refused.value.code == "dependency_unavailable"
    assert refused.value.headers["Retry-After"] == "10"
    clock.now += 10
    assert breaker.state == "half_open" and state() == 2
    with pytest.raises(ConnectionError):  # the trial fails: open again
        await breaker.call(fail)
    assert breaker.state == "open"
    clock.now += 10
    assert await breaker.call(ok) == "ok"  # the trial succeeds: closed
    assert breaker.state == "closed" and state() == 0
    value = metrics.value
    assert value("circuit_breaker_failures_total", {"service": "push"}) == 6
    assert value("circuit_breaker_requests_total", {"service": "push", "result": "rejected"}) == 1
    assert value("circuit_breaker_requests_total", {"service": "push", "result": "success"}) == 2


async def test_half_open_admits_only_the_trial_calls() -> None:
    clock = Clock()
    breaker = CircuitBreaker("ai", Metrics(), failure_threshold=1, reset_timeout=5,
                             half_open_max_calls=1, clock=clock)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    clock.now += 5
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):  # a second caller while the trial runs
        await breaker.call(ok)
    gate.set()
    assert await trial == "ok" and breaker.state == "closed"


async def test_retry_retries_listed_errors_only_and_keeps_the_deadline() -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("blip")
        return "done"

    assert await retry(flaky, retry_on=(ConnectionError,), attempts=5, base_delay=0.01) == "done"
    assert calls == 3

    calls = 0

    async def wrong() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("a bug, not a blip")

    with pytest.raises(ValueError, match="bug"):
        await retry(wrong, retry_on=(ConnectionError,), attempts=5)
    assert calls == 1

    loop = asyncio.get_running_loop()
    start = time.monotonic()
    with pytest.raises(ConnectionError):
        await retry(fail, retry_on=(ConnectionError,), attempts=100, base_delay=0.2,
                    max_delay=0.2, deadline=loop.time() + 0.5)
    assert time.monotonic() - start < 0.6  # never slept past the deadline


# -- through the app: a breaker around the shared outbound client ----------------------
routes = RouteTable(tag="resilience-test")


@routes.get("/v1/restest/upstream", auth=False, rate_limit="none")
async def call_upstream(request: web.Request) -> web.StreamResponse:
    kernel = request.app[KERNEL]
    async with kernel.breaker("upstream"):
        async with kernel.http.get(kernel.state["upstream_url"]) as r:
            r.raise_for_status()
            return json_response(await r.json())


class UpstreamPlugin:
    PLUGIN_NAME = "restest"

    @hookimpl
    def sc_routes(self) -> RouteTable:
        return routes


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Any:
    state = {"hits": 0, "fail": True, "delay": 0.0}

    async def handler(request: web.Request) -> web.Response:
        state["hits"] += 1
        await asyncio.sleep(float(state["delay"]))
        if state["fail"]:
            return web.json_response({"error": "boom"}, status=502)
        return web.json_response({"answer": 42})

    app = web.Application()
    app.router.add_get("/", handler)
    server = await aiohttp_server(app)
    return server, state


async def test_open_breaker_answers_503_without_calling_the_dependency(
        sc_client: Any, upstream: Any) -> None:
    server, state = upstream
    client = await sc_client({"resilience": {"failure_threshold": 3, "reset_timeout": 60}},
                             plugins=[UpstreamPlugin()])
    client.app[KERNEL].state["upstream_url"] = str(server.make_url("/"))
    for _ in range(3):
        assert (await client.get("/v1/restest/upstream")).status == 500
    assert state["hits"] == 3
    r = await client.get("/v1/restest/upstream")
    assert r.status == 503
    body = await r.json()
    assert body["code"] == "dependency_unavailable" and body["service"] == "upstream"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert state["hits"] == 3  # refused without touching the dependency
    metrics = (await (await client.get("/metrics")).text())
    assert 'circuit_breaker_state{service="upstream"} 1.0' in metrics


async def test_shared_client_has_the_configured_timeouts(sc_client: Any, upstream: Any) -> None:
    server, state = upstream
    state.update(fail=False, delay=2.0)
    client = await sc_client({"outbound_http": {"connect_timeout": 0.5, "read_timeout": 0.3}},
                             plugins=[UpstreamPlugin()])
    kernel = client.app[KERNEL]
    assert kernel.http.timeout.sock_connect == 0.5 and kernel.http.timeout.sock_read == 0.3
    start = time.monotonic()
    with pytest.raises(aiohttp.ServerTimeoutError):
        async with kernel.http.get(str(server.make_url("/"))) as r:
            await r.read()
    assert time.monotonic() - start < 1.5
