"""The relational database: SQLAlchemy 2 async engine with a bounded pool.

* SQLite (``sqlite+aiosqlite``, the embedded default) in WAL mode;
  PostgreSQL (``postgresql+asyncpg``) in production.
* Pool size, overflow, recycle and pre-ping from ``[database]`` (pre-ping: only a
  connection idle for a second or more is pinged at checkout).
* Acquiring a connection (pool wait, connect, pre-ping) is bounded by an asyncio
  deadline of ``acquire_timeout`` → 503 ``database_unavailable`` and
  ``db_connection_acquire_timeout_total``.
* The transaction of :meth:`Database.connect` is bounded by ``query_timeout``
  (``statement_timeout`` on PostgreSQL as well, and an asyncio deadline whatever the
  network does) → 503 ``database_timeout`` and ``db_query_timeout_total``.
* ``write(fn, *args)`` runs a synchronous transaction function in one hand-off; on a
  SQLite file that is one call on a single writer thread with its own connection.
* ``fetch(statement)`` / ``fetch_one(statement)``: one small indexed read. On a SQLite
  file it runs on the event loop on a reader connection of its own (WAL: a reader
  never waits for the writer; no thread hand-off, no pool checkout); a statement still
  running after 50 ms is interrupted and, like a read that finds the file busy (WAL
  recovery), done by the pool off the loop (``db_loop_read_fallback_total``). Sees
  every transaction committed before it started (read-your-writes on this instance).
  Elsewhere (PostgreSQL) it is one pooled checkout in autocommit: the statement alone,
  no ``BEGIN``/``COMMIT`` round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Executable, Row, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_only

from ..errors import ServiceUnavailable
from ..metrics import Metrics
from .sqlite import LoopReader as _LoopReader
from .sqlite import Plans as _Plans
from .sqlite import ReaderBusy as _ReaderBusy
from .sqlite import ReaderSlow as _ReaderSlow
from .sqlite import Turns as _Turns
from .sqlite import WriterThread as _WriterThread
from .sqlite import sqlite_pragmas as _sqlite_pragmas

log = logging.getLogger(__name__)
T = TypeVar("T")


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class DatabaseTimeout(ServiceUnavailable):
    code = "database_timeout"


class Database:
    def __init__(self, settings: Any, metrics: Metrics, *, data_dir: str = "data") -> None:
        self.settings = settings
        self.url = str(settings.url).replace("{data_dir}", str(data_dir))
        self.data_dir = data_dir
        self.is_sqlite = self.url.startswith("sqlite")
        self.is_postgres = self.url.startswith("postgresql")
        self.query_timeout = float(settings.query_timeout)
        self.acquire_timeout = float(settings.acquire_timeout)
        self._engine: AsyncEngine | None = None
        self._reads: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._writer: _WriterThread | None = None
        self._reapers: set[asyncio.Future[None]] = set()
        # an in-memory SQLite database is one connection (StaticPool) that every
        # transaction would share; they take turns instead (tests and trials only)
        self._memory_turns: _Turns | None = (
            _Turns() if self.is_sqlite and ":memory:" in self.url else None
        )
        self._reader: _LoopReader | None = None
        self._read_slots: asyncio.Semaphore | None = None
        self._pg_plans: _Plans | None = None
        self.acquire_timeouts = metrics.counter(
            "db_connection_acquire_timeout_total", "Connection acquisitions that timed out")
        self.acquire_duration = metrics.histogram(
            "db_connection_acquire_duration_seconds", "Time to acquire a pooled connection")
        self.query_timeouts = metrics.counter(
            "db_query_timeout_total", "Statements cut by the query timeout")
        self.slow_reads = metrics.counter(
            "db_loop_read_fallback_total",
            "SQLite reads moved off the event loop (over its budget, or the file busy)")
        self.slow_writes = metrics.counter(
            "db_loop_write_fallback_total",
            "Quick SQLite writes moved off the event loop (over their budget, or the file "
            "busy): rolled back and run again on the writer thread")
        self.query_duration = metrics.histogram(
            "db_query_duration_seconds", "Statement latency")
        self.in_use = metrics.gauge("db_connections_in_use", "Pooled connections checked out")
        self.idle = metrics.gauge("db_connections_idle", "Pooled connections idle")

    # -- lifecycle -------------------------------------------------------------------
    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the database is not open (kernel.db is opened in cleanup_ctx)")
        return self._engine

    async def start(self) -> None:
        s = self.settings
        # A local SQLite file never goes stale. Elsewhere SQLAlchemy's pre-ping costs a
        # round trip per checkout (three on asyncpg: BEGIN, ping, ROLLBACK), more than
        # the statement itself: only a connection idle for IDLE_PING seconds is pinged
        # (a dead one is replaced); one in use moments ago is handed out as is.
        pre_ping = bool(s.pool_pre_ping) and not self.is_sqlite
        kwargs: dict[str, Any] = {"echo": bool(s.echo), "pool_pre_ping": False}
        if self.is_sqlite:
            path = self.url.split("///", 1)[-1]
            if path and path != ":memory:" and not path.startswith("file:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._writer = _WriterThread(self.url, timeout=self.acquire_timeout,
                                             on_fallback=self.slow_writes.inc)
                self._instrument(self._writer.engine)
                self._reader = _LoopReader(self.url, timeout=self.query_timeout,
                                           observe=self.query_duration.observe)
                self._instrument(self._reader.engine)
            kwargs["connect_args"] = {"timeout": self.acquire_timeout}
        else:
            kwargs.update(
                pool_size=int(s.pool_size),
                max_overflow=int(s.max_overflow),
                pool_timeout=self.acquire_timeout,
                pool_recycle=int(s.pool_recycle),
            )
        if self.is_postgres:
            kwargs["connect_args"] = {
                "timeout": self.acquire_timeout,
                "command_timeout": self.query_timeout + 1,
                "server_settings": {
                    "statement_timeout": str(int(self.query_timeout * 1000)),
                    "application_name": "secureconnect",
                },
            }
        engine = create_async_engine(self.url, **kwargs)
        self._instrument(engine.sync_engine)
        # read from the pool when scraped: a "checkin" listener runs before the
        # connection is back, and overflow connections closed on return fire nothing
        pool: Any = engine.sync_engine.pool
        self.in_use.set_function(lambda: float(getattr(pool, "checkedout", lambda: 0)()))
        self.idle.set_function(lambda: float(getattr(pool, "checkedin", lambda: 0)()))
        if pre_ping:
            event.listen(pool, "checkout", _ping_if_idle)
        self._engine = engine
        # the same pool, each checkout in autocommit (one statement, no transaction)
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Small reads take turns on the pool's kept connections instead of overflowing:
        # an overflow connection is closed when it comes back to a full pool, so under
        # more concurrent reads than pool_size every extra read paid a fresh connect
        # (TCP, TLS probe, authentication) — most of a PostgreSQL read's cost under load.
        self._read_slots = asyncio.Semaphore(max(1, int(s.pool_size))) if not self.is_sqlite \
            else None
        # PostgreSQL: a prebuilt read runs on the asyncpg connection directly (below)
        self._pg_plans = _Plans(engine.dialect) if self.is_postgres else None
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None:
            self._writer.stop_checkpoints()
            await asyncio.to_thread(self._writer.close)  # after its current transaction
            self._writer = None
        for reaper in list(self._reapers):
            reaper.cancel()
        await asyncio.gather(*self._reapers, return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._reads = None

    def _instrument(self, sync_engine: Any) -> None:
        """SQLite pragmas and statement timing on every engine of this database."""
        if self.is_sqlite:
            event.listen(sync_engine, "connect", _sqlite_pragmas)
        event.listen(sync_engine, "before_cursor_execute", _start_timer)
        event.listen(sync_engine, "after_cursor_execute", self._stop_timer)

    def _stop_timer(self, conn: Any, *args: Any) -> None:
        start = conn.info.pop("sc_query_start", None)
        if start is not None:
            self.query_duration.observe(time.perf_counter() - start)

    # -- use -----------------------------------------------------------------------------
    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection inside a transaction (committed on success).

        Two deadlines, whatever the network does: getting the connection (pool wait,
        connect, pre-ping) within ``acquire_timeout`` → 503 ``database_unavailable``;
        each statement within ``query_timeout`` of its start, and the commit within
        ``query_timeout`` of the last statement's start → 503 ``database_timeout``.
        Neither waits for the clean-up of what it cut: an acquisition still in flight
        is abandoned to a background task, and on PostgreSQL the connection of a
        statement past its deadline is terminated (no cancel request, rollback or
        graceful close, each a round trip)."""
        async with self._guard(), self._turn():
            start = time.perf_counter()
            conn = await self._acquire()
            self.acquire_duration.observe(time.perf_counter() - start)
            deadline = _StatementDeadline(conn, self.query_timeout, cut=self.is_postgres)
            info = conn.sync_connection.info if conn.sync_connection is not None else {}
            info[_DEADLINE] = deadline  # re-armed by each statement (_start_timer)
            try:
                async with deadline.timeout:
                    async with conn.begin():
                        yield conn
            except BaseException:
                if deadline.timeout.expired() or deadline.cut:
                    await self._discard(conn)
                    raise TimeoutError from None
                await conn.close()
                raise
            finally:
                deadline.stop()
                info.pop(_DEADLINE, None)
            await conn.close()

    async def _acquire(self, engine: AsyncEngine | None = None) -> AsyncConnection:
        conn = (engine or self.engine).connect()
        task = asyncio.ensure_future(conn.start())
        try:
            done, _ = await asyncio.wait({task}, timeout=self.acquire_timeout)
        except asyncio.CancelledError:
            self._abandon(task, conn)
            raise
        if not done:
            self._abandon(task, conn)
            self.acquire_timeouts.inc()
            raise DatabaseUnavailable(
                f"no database connection within {self.acquire_timeout:g} s; retry shortly")
        task.result()  # the acquisition's own error (pool timeout, refused, ...)
        return conn

    def _abandon(self, task: asyncio.Future[Any], conn: AsyncConnection) -> None:
        """Let a cut acquisition finish its clean-up in the background; a connection
        it got after all goes back to the pool."""
        task.cancel()
        reaper = asyncio.ensure_future(self._reap(task, conn))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    async def _reap(self, task: asyncio.Future[Any], conn: AsyncConnection) -> None:
        try:
            await task
        except BaseException:
            return
        await self._discard(conn)

    async def _discard(self, conn: AsyncConnection) -> None:
        """Drop a connection whose state is unknown (cut mid-conversation); the pool
        opens a fresh one when needed."""
        _terminate(conn)
        try:
            if conn.sync_connection is not None:
                await conn.invalidate()
            await conn.close()
        except Exception:
            log.debug("discarding a database connection failed", exc_info=True)

    async def fetch(self, statement: Executable,
                    params: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        """All rows of one small read (a few indexed rows; see the module docstring).
        ``params`` bind a statement built once with ``bindparam`` (no per-call build)."""
        if self._reader is not None:
            try:
                return self._reader.fetch(statement, params)
            except (_ReaderSlow, _ReaderBusy):
                # past the loop's budget, or the file busy: the pool reads it off the
                # loop, within the query timeout
                self.slow_reads.inc()
        async with self._guard():
            if not self.is_sqlite:
                try:
                    return await self._fetch_pooled(statement, params)
                except DBAPIError as exc:
                    if not exc.connection_invalidated:
                        raise
                    # a connection that died while idle (pinged only after a second):
                    # a read is safe to run again, on a fresh connection
                    return await self._fetch_pooled(statement, params)
            start = time.perf_counter()
            async with self._turn(), self.engine.connect() as conn:
                self.acquire_duration.observe(time.perf_counter() - start)
                # an aiosqlite statement cannot be cancelled, only interrupted (the
                # sqlite3 call is thread-safe); the error maps to a 503 in _guard
                raw: Any = (await conn.get_raw_connection()).driver_connection
                sqlite_conn = getattr(raw, "_conn", None)
                cut = None if sqlite_conn is None else asyncio.get_running_loop().call_later(
                    self.query_timeout, sqlite_conn.interrupt)
                try:
                    return (await conn.execute(statement, params)).all()
                finally:
                    if cut is not None:
                        cut.cancel()

    async def _fetch_pooled(self, statement: Executable,
                            params: dict[str, Any] | None) -> Sequence[Row[Any]]:
        start = time.perf_counter()
        slots = self._read_slots
        if slots is None:
            return await self._fetch_on(start, statement, params)
        # the wait for a slot counts against the acquisition deadline
        try:
            async with asyncio.timeout(self.acquire_timeout):
                await slots.acquire()
        except TimeoutError:
            self.acquire_timeouts.inc()
            raise DatabaseUnavailable(
                f"no database connection within {self.acquire_timeout:g} s; retry shortly"
            ) from None
        try:
            return await self._fetch_on(start, statement, params)
        finally:
            slots.release()

    async def _fetch_on(self, start: float, statement: Executable,
                        params: dict[str, Any] | None) -> Sequence[Row[Any]]:
        # autocommit: no BEGIN/COMMIT round trips around one statement; acquisition and
        # statement under the same deadlines as connect(), and a statement cut by its
        # deadline drops its connection at once (no rollback round trip to wait for)
        conn = await self._acquire(self._reads)
        self.acquire_duration.observe(time.perf_counter() - start)
        deadline = _StatementDeadline(conn, self.query_timeout, cut=self.is_postgres)
        plan = None
        if params is not None and self._pg_plans is not None:
            plan = self._pg_plans.get(statement)
        try:
            async with deadline.timeout:
                # a statement built once: compiled once, run on the asyncpg connection
                # itself (its own prepared-statement cache) without SQLAlchemy's
                # per-execution work, under the same deadlines
                fast = None if plan is None else await self._fetch_asyncpg(
                    conn, plan, params or {})
                rows = fast if fast is not None else (
                    await conn.execute(statement, params)).all()
        except BaseException:
            if deadline.timeout.expired() or deadline.cut:
                await self._discard(conn)
                raise TimeoutError from None
            await conn.close()
            raise
        finally:
            deadline.stop()
        await conn.close()
        return rows

    async def _fetch_asyncpg(self, conn: AsyncConnection, plan: Any,
                             params: dict[str, Any]) -> list[Any] | None:
        try:
            args = plan.args(params)
        except Exception:
            return None  # (a missing or unbindable parameter: SQLAlchemy's error)
        sync = conn.sync_connection
        assert sync is not None
        raw: Any = sync.connection.dbapi_connection
        start = time.perf_counter()
        try:
            records = await raw.driver_connection.fetch(plan.sql, *args)
        except Exception:
            return None  # SQLAlchemy runs it again and words the error (or succeeds)
        self.query_duration.observe(time.perf_counter() - start)
        rows: list[Any] = plan.rows(records)
        return rows

    async def execute_one(self, statement: Executable,
                          params: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        """PostgreSQL: one statement — a write too — in autocommit on a pooled
        connection, its own transaction in one round trip (no ``BEGIN``/``COMMIT``);
        its rows. Same deadlines and error mapping as :meth:`fetch`; never run twice."""
        if not self.is_postgres:
            raise RuntimeError("execute_one is for PostgreSQL")
        async with self._guard():
            return await self._fetch_pooled(statement, params)

    async def fetch_one(self, statement: Executable,
                        params: dict[str, Any] | None = None) -> Row[Any] | None:
        """The first row of one small read, or ``None``."""
        rows = await self.fetch(statement, params)
        return rows[0] if rows else None

    async def read(self, fn: Callable[[Callable[..., Sequence[Any]]], T]) -> T:
        """``fn(fetch)`` — ``fetch(statement, params=None)`` returns all rows — with its
        reads in one transaction: several small reads that must agree (one snapshot on
        SQLite; on PostgreSQL one transaction, as :meth:`session` gives). On a SQLite
        file on the loop reader (no thread hand-off; statements built once run on
        sqlite3 directly), else — or past the loop's budget — on a pooled connection
        in one hand-off. ``fn`` is synchronous and may run twice (after a fallback)."""
        if self._reader is not None:
            try:
                return self._reader.read(fn)
            except (_ReaderSlow, _ReaderBusy):
                self.slow_reads.inc()

        plans = self._pg_plans

        def run(conn: Any) -> T:
            raw: Any = conn.connection.dbapi_connection if plans is not None else None

            def fetch(statement: Executable, params: dict[str, Any] | None = None) -> Any:
                plan = plans.get(statement) if plans is not None and params is not None \
                    else None
                if plan is not None:
                    # (in run_sync's greenlet: the asyncpg call awaited from sync code,
                    # inside the transaction; a statement built once skips SQLAlchemy)
                    try:
                        args = plan.args(params or {})
                    except Exception:
                        args = None
                    if args is not None:
                        try:
                            return plan.rows(await_only(raw.driver_connection.fetch(
                                plan.sql, *args)))
                        except Exception:
                            pass  # SQLAlchemy runs it again and words the error
                return conn.execute(statement, params).all()

            return fn(fetch)

        async with self.connect() as conn:
            return await conn.run_sync(run)

    async def write(self, fn: Callable[..., T], *args: Any, quick: bool = False) -> T:
        """``fn(connection, *args)`` — ``connection`` a synchronous SQLAlchemy
        ``Connection`` — in one write transaction (committed on success), handed off in
        a single call: a transaction of many statements costs one thread hop instead of
        one per statement, which matters when the event loop is busy.

        On a SQLite file the call runs on the database's one writer thread, with its own
        connection (SQLite has a single writer anyway); elsewhere on a pooled
        connection. Bounded by ``query_timeout``; errors map as for :meth:`connect`. A
        transaction cut by the timeout on SQLite may still commit afterwards.

        ``quick=True``: a short transaction that may run twice (its first run rolled
        back). On a SQLite file it then runs on the event loop, with the writer's
        connection, under a 50 ms budget: no thread hand-off and wake-ups (the group
        commit of every send); past the budget, or finding the file busy, it is rolled
        back and run on the writer thread."""
        if self._writer is None:
            async with self.connect() as conn:
                return await conn.run_sync(fn, *args)
        async with self._guard(), asyncio.timeout(self.query_timeout):
            if quick:
                return await self._writer.run_here(fn, *args)
            return await self._writer.run(fn, *args)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An ORM session in a transaction: committed on success, rolled back on error."""
        if self._sessions is None:
            raise RuntimeError("the database is not open")
        async with self._guard(), self._turn(), self._sessions() as session, session.begin():
            yield session

    def _turn(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._memory_turns.turn() if self._memory_turns else contextlib.nullcontext()

    @asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Map pool exhaustion, lost connections and slow statements to 503s."""
        try:
            yield
        except PoolTimeout:
            self.acquire_timeouts.inc()
            raise DatabaseUnavailable(
                "the database connection pool is exhausted; retry shortly") from None
        except TimeoutError:
            self.query_timeouts.inc()
            raise DatabaseTimeout("the database did not answer in time") from None
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_query_timeout(exc):
                self.query_timeouts.inc()
                raise DatabaseTimeout("a database statement exceeded its timeout") from None
            if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(
                exc, OperationalError
            ) and not _is_connection_error(exc):
                raise
            log.warning("database unavailable: %s", type(exc).__name__)
            raise DatabaseUnavailable("the database is unavailable; retry shortly") from None

    async def ping(self) -> None:
        async with asyncio.timeout(self.acquire_timeout), self.connect() as conn:
            await conn.execute(text("SELECT 1"))


IDLE_PING = 1.0


def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Pool checkout: ping a connection idle for ``IDLE_PING`` seconds or more; a dead
    one makes the pool connect afresh (``DisconnectionError``)."""
    now = time.monotonic()
    if now - record.info.get("sc_checked_out", 0.0) >= IDLE_PING:
        try:
            dbapi_conn.ping()
        except Exception as exc:
            raise DisconnectionError(f"pre-ping failed: {type(exc).__name__}") from exc
    record.info["sc_checked_out"] = now


def _terminate(conn: AsyncConnection) -> None:
    """Close the driver connection under ``conn`` at once, without a word to the
    server (asyncpg's ``terminate``); a no-op for other drivers or when none is held."""
    try:
        sync = conn.sync_connection
        if sync is None or sync.closed or sync.invalidated:
            return  # (reading .connection would open a new one)
        raw = sync.connection.dbapi_connection
        driver = getattr(raw, "_connection", None)
        terminate = getattr(driver, "terminate", None)
        if callable(terminate) and type(driver).__module__.startswith("asyncpg"):
            terminate()
    except Exception:
        log.debug("terminating a database connection failed", exc_info=True)


_DEADLINE = "sc_statement_deadline"


class _StatementDeadline:
    """The asyncio deadline of :meth:`Database.connect`, moved to ``query_timeout``
    after the start of each statement. On PostgreSQL the driver connection is
    terminated just before the deadline cancels the task, so the cancelled statement
    fails at once instead of waiting for a cancel request to travel."""

    def __init__(self, conn: AsyncConnection, seconds: float, *, cut: bool) -> None:
        self.conn = conn
        self.seconds = seconds
        self.loop = asyncio.get_running_loop()
        self.timeout = asyncio.timeout(seconds)
        self.cut = False
        self._cuts = cut
        self._cutter: asyncio.TimerHandle | None = None
        self._arm_cutter()

    def _arm_cutter(self) -> None:
        if self._cuts:
            self._cutter = self.loop.call_later(max(0.0, self.seconds - 0.005), self._cut)

    def _cut(self) -> None:
        self.cut = True
        _terminate(self.conn)

    def rearm(self) -> None:
        if self.timeout.expired() or self.cut:
            return
        self.timeout.reschedule(self.loop.time() + self.seconds)
        if self._cutter is not None:
            self._cutter.cancel()
        self._arm_cutter()

    def stop(self) -> None:
        if self._cutter is not None:
            self._cutter.cancel()
            self._cutter = None


def _start_timer(conn: Any, *args: Any) -> None:
    conn.info["sc_query_start"] = time.perf_counter()
    deadline = conn.info.get(_DEADLINE)
    if deadline is not None:
        deadline.rearm()


def _is_query_timeout(exc: BaseException) -> bool:
    text_ = str(getattr(exc, "orig", exc)).lower()
    return ("statement timeout" in text_ or "canceling statement" in text_
            or text_ == "interrupted") or isinstance(
        getattr(exc, "orig", None), TimeoutError)


def _is_connection_error(exc: BaseException) -> bool:
    text_ = str(getattr(exc, "orig", exc)).lower()
    return any(s in text_ for s in ("connection", "connect", "closed", "terminat"))
