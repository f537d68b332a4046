"""PostgreSQL behind a delaying proxy the test owns (issue 22, items 5 and 9): errors
come within the configured timeouts (+1 s), readiness within ``check_timeout``, and
the pool gauges say what the pool holds."""

from __future__ import annotations

import asyncio
import time

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import register_and_login
from secureconnect.testing.proxy import DelayProxy

TIMEOUTS = {"query_timeout": 1.0, "acquire_timeout": 1.0}


async def _client(sc_client, proxy, postgres_url, **database):
    return await sc_client({
        "database": {"url": proxy.url(postgres_url), **TIMEOUTS, **database},
        "health": {"check_timeout": 0.5},
        "auth": {"session_cache_ttl": 0.01},
        # every request here must reach the database: no answer from the read cache
        "cache": {"enabled": False},
    })


async def _timed(coro):
    start = time.perf_counter()
    result = await coro
    return result, time.perf_counter() - start


async def test_slow_database_answers_503_within_the_timeouts(sc_client, postgres_url,
                                                             postgres_server):
    proxy = await DelayProxy("127.0.0.1", postgres_server.port).start()
    try:
        client = await _client(sc_client, proxy, postgres_url)
        user = await register_and_login(client)
        assert (await client.get("/v1/users/me", headers=user.headers)).status == 200
        proxy.delay = 3.0
        for _ in range(3):
            r, elapsed = await _timed(client.get("/v1/users/me", headers=user.headers))
            assert r.status == 503, await r.text()
            assert (await r.json())["code"] in ("database_unavailable", "database_timeout")
            # acquire (1 s) + query (1 s) + 1 s of slack at most
            assert elapsed < 3.0, elapsed
        r, elapsed = await _timed(client.get("/health/ready"))
        assert r.status == 503
        assert elapsed < 0.5 + 0.5, elapsed
        # recovery without a restart
        proxy.delay = 0.0
        await wait_for(lambda: _ok(client, user), timeout=15, interval=0.3,
                       message="the database serves again")
    finally:
        await proxy.close()


async def _ok(client, user) -> bool:
    r = await client.get("/v1/users/me", headers=user.headers)
    return r.status == 200


async def test_pool_gauges_match_the_pool(sc_client, postgres_url, postgres_server):
    proxy = await DelayProxy("127.0.0.1", postgres_server.port).start()
    try:
        client = await _client(sc_client, proxy, postgres_url, pool_size=3, max_overflow=4,
                               acquire_timeout=10.0, query_timeout=10.0)
        kernel = client.app[KERNEL]
        users = [await register_and_login(client) for _ in range(2)]

        def gauges() -> tuple[float, float]:
            return (kernel.metrics.value("db_connections_in_use"),
                    kernel.metrics.value("db_connections_idle"))

        await wait_for(lambda: gauges()[0] == 0, timeout=5, message="nothing in use at rest")
        # a burst beyond pool_size: overflow connections open, then close on return
        proxy.delay = 0.02
        rs = await asyncio.gather(*(client.get("/v1/users/me", headers=users[i % 2].headers)
                                    for i in range(12)))
        assert {r.status for r in rs} == {200}
        proxy.delay = 0.0
        pool = kernel.db.engine.sync_engine.pool
        await wait_for(lambda: gauges()[0] == 0, timeout=5, message="all returned")
        assert gauges() == (0, pool.checkedin()), (gauges(), pool.status())
        assert pool.checkedin() <= 3
    finally:
        await proxy.close()


async def test_slow_statement_is_cut_at_the_query_timeout(sc_client, postgres_url,
                                                          postgres_server):
    proxy = await DelayProxy("127.0.0.1", postgres_server.port).start()
    try:
        # no pre-ping: a pooled connection is handed out at once, the statement is slow
        client = await _client(sc_client, proxy, postgres_url, pool_pre_ping=False)
        kernel = client.app[KERNEL]
        user = await register_and_login(client)
        proxy.delay = 3.0
        r, elapsed = await _timed(client.get("/v1/users/me", headers=user.headers))
        assert r.status == 503 and (await r.json())["code"] == "database_timeout"
        assert elapsed < 1.0 + 1.0, elapsed
        assert kernel.metrics.value("db_query_timeout_total") >= 1
    finally:
        await proxy.close()
