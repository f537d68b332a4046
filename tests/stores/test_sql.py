"""The SQL database on SQLite and on a real PostgreSQL: pools, timeouts, outages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import Connection, text

from secureconnect import RouteTable, hookimpl
from secureconnect.app import KERNEL
from secureconnect.http.handlers import json_response
from secureconnect.store.sql import DatabaseTimeout
from secureconnect.testing import wait_for

routes = RouteTable(tag="sql-test")


@routes.get("/v1/sqltest/sleep/{seconds}", auth=False, rate_limit="none")
async def sleep(request: web.Request) -> web.StreamResponse:
    seconds = float(request.match_info["seconds"])
    async with request.app[KERNEL].db.connect() as conn:
        await conn.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
    return json_response({"slept": seconds})


@routes.get("/v1/sqltest/one", auth=False, rate_limit="none")
async def one(request: web.Request) -> web.StreamResponse:
    async with request.app[KERNEL].db.connect() as conn:
        value = (await conn.execute(text("SELECT 1"))).scalar_one()
    return json_response({"one": value})


class SqlTestPlugin:
    PLUGIN_NAME = "sqltest"

    @hookimpl
    def sc_routes(self) -> RouteTable:
        return routes


def _pg(url: str, **database: Any) -> dict[str, Any]:
    return {"database": {"url": url, "acquire_timeout": 1.0, "query_timeout": 1.0,
                         **database}}


async def test_sqlite_default_answers(sc_client: Any) -> None:
    client = await sc_client(plugins=[SqlTestPlugin()])
    r = await client.get("/v1/sqltest/one")
    assert (await r.json()) == {"one": 1}


async def test_pool_exhaustion_is_a_fast_503(sc_client: Any, postgres_url: str) -> None:
    settings = _pg(postgres_url, pool_size=2, max_overflow=0, query_timeout=5)
    # push's outbox dispatcher reads the database in the background: off, so that the
    # three requests below are the pool's only users
    settings["plugins"] = {"push": False}
    client = await sc_client(settings, plugins=[SqlTestPlugin()])
    start = time.monotonic()
    results = await asyncio.gather(*(client.get("/v1/sqltest/sleep/2") for _ in range(3)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 200, 503]
    failed = next(r for r in results if r.status == 503)
    assert (await failed.json())["code"] == "database_unavailable"
    assert time.monotonic() - start < 4
    metrics = client.app[KERNEL].metrics
    assert metrics.value("db_connection_acquire_timeout_total") == 1


async def test_slow_query_is_cut_at_the_query_timeout(sc_client: Any, postgres_url: str) -> None:
    client = await sc_client(_pg(postgres_url), plugins=[SqlTestPlugin()])
    start = time.monotonic()
    r = await client.get("/v1/sqltest/sleep/10")
    assert r.status == 503
    assert (await r.json())["code"] == "database_timeout"
    assert time.monotonic() - start < 3
    assert client.app[KERNEL].metrics.value("db_query_timeout_total") == 1
    r = await client.get("/v1/sqltest/one")  # the pool is healthy afterwards
    assert r.status == 200


async def test_postgres_outage_and_recovery(sc_client: Any, private_postgres: Any) -> None:
    client = await sc_client(_pg(private_postgres.url), plugins=[SqlTestPlugin()])
    assert (await client.get("/health/ready")).status == 200
    private_postgres.stop()
    start = time.monotonic()
    r = await client.get("/health/ready")
    assert r.status == 503
    assert (await r.json())["failed"] == ["database"]
    assert time.monotonic() - start < 5
    start = time.monotonic()
    r = await client.get("/v1/sqltest/one")
    assert r.status == 503
    assert (await r.json())["code"] == "database_unavailable"
    assert time.monotonic() - start < 5
    private_postgres.start()

    async def recovered() -> bool:
        return (await client.get("/v1/sqltest/one")).status == 200

    await wait_for(recovered, timeout=15, interval=0.3, message="recovery without restart")
    assert (await client.get("/health/ready")).status == 200


async def test_write_runs_one_transaction_in_one_hand_off_and_is_bounded(
        sc_client: Any, tmp_path: Any) -> None:
    """``kernel.db.write`` on a SQLite file: the transaction commits (seen through the
    pooled connections), statements are timed, a failing function rolls back whole, and
    one that overruns the query timeout is a counted 503."""
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/w.db",
                                           "query_timeout": 0.5}})
    kernel = client.app[KERNEL]
    metrics = kernel.metrics
    timed = metrics.value("db_query_duration_seconds_count") or 0

    def create(conn: Connection, n: int) -> int:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
        for i in range(n):
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": i})
        return n

    def half_then_fail(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (99)"))
        raise ValueError("after one insert")

    def slow(conn: Connection) -> None:
        time.sleep(1.0)

    assert await kernel.db.write(create, 3) == 3
    with pytest.raises(ValueError, match="after one insert"):
        await kernel.db.write(half_then_fail)
    async with kernel.db.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3
    assert (metrics.value("db_query_duration_seconds_count") or 0) >= timed + 5
    with pytest.raises(DatabaseTimeout):
        await kernel.db.write(slow)
    assert metrics.value("db_query_timeout_total") == 1


async def test_small_reads_on_a_sqlite_file_see_every_commit_and_are_bounded(
        sc_client: Any, tmp_path: Any) -> None:
    """``kernel.db.fetch`` on a SQLite file (served on the loop, no thread hand-off):
    it sees what the writer thread and the pooled connections committed just before
    (read-your-writes); a slow statement leaves the loop after its budget and no stale
    snapshot behind; one past the query timeout is a counted 503."""
    db_file = tmp_path / "r.db"
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{db_file}",
                                           "query_timeout": 2.0}})
    kernel = client.app[KERNEL]

    def create(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))

    def insert(conn: Connection, n: int) -> None:
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    await kernel.db.write(create)
    for n in range(1, 20):
        await kernel.db.write(insert, n)  # the writer thread
        rows = await kernel.db.fetch(text("SELECT max(n) FROM t WHERE n < 100"))
        assert rows[0][0] == n
        async with kernel.db.connect() as conn:  # a pooled connection
            await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": 100 + n})
        assert (await kernel.db.fetch_one(text("SELECT max(n) FROM t")))[0] == 100 + n
    assert await kernel.db.fetch_one(text("SELECT n FROM t WHERE n = -1")) is None

    # a read that outlives the loop's budget is interrupted there and done by the pool,
    # which answers it; one past the query timeout is a counted 503
    slow = text("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
                "WHERE i < :n) SELECT count(*) FROM r")
    fallbacks = kernel.metrics.value("db_loop_read_fallback_total") or 0
    assert (await kernel.db.fetch_one(slow.bindparams(n=300_000)))[0] == 300_000
    assert kernel.metrics.value("db_loop_read_fallback_total") == fallbacks + 1
    timeouts = kernel.metrics.value("db_query_timeout_total") or 0
    start = time.monotonic()
    with pytest.raises(DatabaseTimeout):
        await kernel.db.fetch(slow.bindparams(n=10**9))
    assert time.monotonic() - start < 5.0
    assert kernel.metrics.value("db_query_timeout_total") == timeouts + 1

    # the interrupted statement left no read transaction open (no stale snapshot)
    await kernel.db.write(insert, 1000)
    assert (await kernel.db.fetch_one(text("SELECT max(n) FROM t")))[0] == 1000


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_prebuilt_reads_run_without_sqlalchemy_and_agree_with_it(
        sc_client: Any, tmp_path: Any, store: str, request: pytest.FixtureRequest) -> None:
    """A statement built once and read with ``params`` runs on the driver's connection
    directly (compiled once; sqlite3 on the loop, asyncpg on a pooled connection): the
    same values and types as SQLAlchemy gives (aware UTC datetimes, booleans, None), by
    index, attribute and ``_mapping``; every commit seen; on SQLite a slow one still
    leaves the loop; a missing parameter is SQLAlchemy's error."""
    from datetime import UTC, datetime

    from sqlalchemy import (
        Boolean,
        Column,
        Integer,
        MetaData,
        String,
        Table,
        bindparam,
        column,
        select,
    )
    from sqlalchemy.exc import StatementError

    from secureconnect.models import UtcDateTime

    if store == "sqlite":
        # (5 s: room for a loaded CI machine; a 2 s deadline once cut a plain read there)
        settings = {"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/p.db",
                                 "query_timeout": 5.0}}
    else:
        settings = _pg(request.getfixturevalue("postgres_url"), query_timeout=5.0)
        settings["plugins"] = {"push": False}
    client = await sc_client(settings)
    kernel = client.app[KERNEL]
    meta = MetaData()
    t = Table("typed", meta, Column("id", Integer, primary_key=True), Column("name", String),
              Column("flag", Boolean), Column("at", UtcDateTime(timezone=True)),
              Column("count", Integer))
    await kernel.db.write(lambda conn: meta.create_all(conn))
    by_id = select(t).where(t.c.id == bindparam("id"))
    since = (select(t.c.id, t.c.at).where(t.c.at >= bindparam("since"))
             .order_by(t.c.id).limit(bindparam("limit", type_=Integer)))
    at = datetime(2026, 12, 7, 8, 30, 15, 123456, tzinfo=UTC)

    def put(conn: Connection, n: int, flag: bool | None) -> None:
        conn.execute(t.insert().values(id=n, name=f"n{n}", flag=flag, at=at, count=n * 2))

    queries = kernel.metrics.value("db_query_duration_seconds_count")
    for n in range(1, 6):
        await kernel.db.write(put, n, None if n == 3 else n % 2 == 0)
        row = await kernel.db.fetch_one(by_id, {"id": n})  # read-your-writes
        assert row is not None
        async with kernel.db.connect() as conn:
            expected = (await conn.execute(by_id, {"id": n})).one()
        assert tuple(row) == tuple(expected)
        assert row._mapping == dict(expected._mapping)
        assert (row.id, row.name, row.flag, row.at) == (n, f"n{n}", expected.flag, at)
        assert row.at.tzinfo is UTC and row[4] == n * 2
        assert row.flag is (None if n == 3 else n % 2 == 0)
    assert type(row).__name__ == "FastRow"  # the direct path, not SQLAlchemy's Row
    assert kernel.metrics.value("db_query_duration_seconds_count") > queries
    assert await kernel.db.fetch_one(by_id, {"id": 99}) is None
    # a bound datetime goes through the column type's bind processor; limit and order
    rows = await kernel.db.fetch(since, {"since": at, "limit": 3})
    assert [(r.id, r.at) for r in rows] == [(1, at), (2, at), (3, at)]
    assert await kernel.db.fetch(since, {"since": datetime(2027, 1, 1, tzinfo=UTC),
                                         "limit": 3}) == []
    with pytest.raises(StatementError):
        await kernel.db.fetch(by_id, {})

    if store != "sqlite":
        return
    # slow: interrupted on the loop, answered by the pool
    slow = text("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
                "WHERE i < :n) SELECT count(*) AS c FROM r").columns(column("c", Integer))
    fallbacks = kernel.metrics.value("db_loop_read_fallback_total") or 0
    assert (await kernel.db.fetch_one(slow, {"n": 300_000})).c == 300_000
    assert kernel.metrics.value("db_loop_read_fallback_total") == fallbacks + 1
    assert (await kernel.db.fetch_one(slow, {"n": 10})).c == 10
    await kernel.db.write(put, 6, True)
    assert (await kernel.db.fetch_one(by_id, {"id": 6})).flag is True


async def test_read_runs_several_reads_in_one_snapshot(sc_client: Any, tmp_path: Any) -> None:
    """``Database.read(fn)`` on a SQLite file: the reads of ``fn`` agree (a commit made
    between two of them is not seen by the second), the next read sees it (no snapshot
    left open), and a read past the loop's budget runs the whole ``fn`` off the loop."""
    import sqlite3

    from sqlalchemy import bindparam

    db_file = tmp_path / "s.db"
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{db_file}",
                                           "query_timeout": 2.0}})
    kernel = client.app[KERNEL]

    def create(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))

    await kernel.db.write(create)
    count = text("SELECT count(*) AS c FROM t WHERE n > :floor").bindparams(
        bindparam("floor")).columns()

    def two_reads(fetch: Any) -> tuple[int, int]:
        first = fetch(count, {"floor": 0})[0][0]
        other = sqlite3.connect(db_file)  # another writer commits in between
        with other:
            other.execute("INSERT INTO t VALUES (2)")
        other.close()
        return first, fetch(text("SELECT count(*) FROM t"))[0][0]

    assert await kernel.db.read(two_reads) == (1, 1)
    assert (await kernel.db.fetch_one(text("SELECT count(*) FROM t")))[0] == 2

    slow = text("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
                "WHERE i < 300000) SELECT count(*) FROM r")
    fallbacks = kernel.metrics.value("db_loop_read_fallback_total") or 0
    got = await kernel.db.read(lambda fetch: (fetch(count, {"floor": 0})[0][0],
                                              fetch(slow)[0][0]))
    assert got == (2, 300_000)
    assert kernel.metrics.value("db_loop_read_fallback_total") == fallbacks + 1
    assert (await kernel.db.fetch_one(text("SELECT max(n) FROM t")))[0] == 2


async def test_quick_write_runs_on_the_loop_and_on_the_thread_past_its_budget(
        sc_client: Any, tmp_path: Any) -> None:
    """``kernel.db.write(fn, quick=True)`` on a SQLite file: it commits on the event
    loop (no thread); a transaction past its budget, or finding the file busy, is
    rolled back and run again on the writer thread — committed once — and counted."""
    import sqlite3
    import threading

    db_file = tmp_path / "q.db"
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{db_file}",
                                           "query_timeout": 5.0}})
    kernel = client.app[KERNEL]
    ran_on: list[str] = []

    def create(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))

    def insert(conn: Connection, n: int, slow: bool = False) -> int:
        ran_on.append(threading.current_thread().name)
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        if slow and len(ran_on) == 1:  # far past 50 ms of SQL, the first time only
            conn.execute(text("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                              "FROM c WHERE x < 50000000) SELECT count(*) FROM c")).all()
        return n

    await kernel.db.write(create)
    assert await kernel.db.write(insert, 1, quick=True) == 1
    assert ran_on == [threading.main_thread().name]
    assert (await kernel.db.fetch_one(text("SELECT count(*) FROM t")))[0] == 1
    fallbacks = kernel.metrics.value("db_loop_write_fallback_total") or 0

    ran_on.clear()
    assert await kernel.db.write(insert, 2, True, quick=True) == 2
    assert ran_on[0] == threading.main_thread().name
    assert ran_on[1].startswith("sc-sqlite-writer"), ran_on
    rows = await kernel.db.fetch(text("SELECT n FROM t ORDER BY n"))
    assert [r[0] for r in rows] == [1, 2]  # the interrupted first run left nothing
    assert kernel.metrics.value("db_loop_write_fallback_total") == fallbacks + 1

    # another connection holds the write lock: busy on the loop, done on the thread
    # once the lock is free
    other = sqlite3.connect(db_file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ran_on.clear()
    task = asyncio.ensure_future(kernel.db.write(insert, 3, quick=True))
    await asyncio.sleep(0.3)
    assert not task.done()
    other.execute("COMMIT")
    other.close()
    assert await asyncio.wait_for(task, 5) == 3
    assert ran_on[0] == threading.main_thread().name
    assert ran_on[-1].startswith("sc-sqlite-writer")
    assert kernel.metrics.value("db_loop_write_fallback_total") == fallbacks + 2
    assert (await kernel.db.fetch_one(text("SELECT count(*) FROM t")))[0] == 3


async def test_writes_reach_the_database_file_by_a_background_checkpoint(
        sc_client: Any, tmp_path: Any) -> None:
    """The writer does not checkpoint on commit (a commit on the loop never waits for
    a checkpoint's fsyncs); a background checkpoint brings every write into the main
    database file within about a second."""
    import sqlite3

    db_file = tmp_path / "c.db"
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{db_file}"}})
    kernel = client.app[KERNEL]

    def create(conn: Connection) -> None:
        conn.execute(text("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)"))

    def insert(conn: Connection, n: int) -> None:
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})

    def in_main_file() -> int:
        # immutable: the main file alone, the WAL ignored
        conn = sqlite3.connect(f"file:{db_file}?immutable=1", uri=True)
        try:
            return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
        except sqlite3.OperationalError:
            return -1  # (the table itself not checkpointed yet)
        finally:
            conn.close()

    await kernel.db.write(create)
    for n in range(1, 6):
        await kernel.db.write(insert, n, quick=True)
    assert await asyncio.to_thread(in_main_file) < 5
    await wait_for(lambda: in_main_file() == 5, timeout=10)
    await kernel.db.write(insert, 6)  # on the thread: checkpointed as well
    await wait_for(lambda: in_main_file() == 6, timeout=10)
