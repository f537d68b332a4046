"""The relational database: SQLAlchemy 2 async engine with a bounded pool.

* SQLite (``sqlite+aiosqlite``, the embedded default) in WAL mode;
  PostgreSQL (``postgresql+asyncpg``) in production.
* Pool size, overflow, recycle and pre-ping from ``[database]`` (pre-ping: only a
  connection idle for a second or more is pinged at checkout).
* Acquiring a connection waits at most ``acquire_timeout`` → 503
  ``database_unavailable`` and ``db_connection_acquire_timeout_total``.
* Each statement is bounded by ``query_timeout`` (``statement_timeout`` on PostgreSQL,
  an asyncio deadline everywhere) → 503 ``database_timeout`` and ``db_query_timeout_total``.
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Executable, Row, create_engine, event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from ..errors import ServiceUnavailable
from ..metrics import Metrics

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
        # an in-memory SQLite database is one connection (StaticPool) that every
        # transaction would share; they take turns instead (tests and trials only)
        self._memory_turns: _Turns | None = (
            _Turns() if self.is_sqlite and ":memory:" in self.url else None
        )
        self._reader: _LoopReader | None = None
        self.acquire_timeouts = metrics.counter(
            "db_connection_acquire_timeout_total", "Connection acquisitions that timed out")
        self.acquire_duration = metrics.histogram(
            "db_connection_acquire_duration_seconds", "Time to acquire a pooled connection")
        self.query_timeouts = metrics.counter(
            "db_query_timeout_total", "Statements cut by the query timeout")
        self.slow_reads = metrics.counter(
            "db_loop_read_fallback_total",
            "SQLite reads moved off the event loop (over its budget, or the file busy)")
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
                self._writer = _WriterThread(self.url, timeout=self.acquire_timeout)
                self._instrument(self._writer.engine)
                self._reader = _LoopReader(self.url, timeout=self.query_timeout)
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
        pool = engine.sync_engine.pool
        event.listen(pool, "checkout", lambda *a: self._pool_changed())
        if pre_ping:
            event.listen(pool, "checkout", _ping_if_idle)
        event.listen(pool, "checkin", lambda *a: self._pool_changed())
        self._engine = engine
        # the same pool, each checkout in autocommit (one statement, no transaction)
        self._reads = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None:
            await asyncio.to_thread(self._writer.close)  # after its current transaction
            self._writer = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = self._reads = None

    def _instrument(self, sync_engine: Any) -> None:
        """SQLite pragmas and statement timing on every engine of this database."""
        if self.is_sqlite:
            event.listen(sync_engine, "connect", _sqlite_pragmas)
        event.listen(sync_engine, "before_cursor_execute", _start_timer)
        event.listen(sync_engine, "after_cursor_execute", self._stop_timer)

    def _pool_changed(self) -> None:
        pool: Any = self.engine.sync_engine.pool
        checked_out = getattr(pool, "checkedout", lambda: 0)()
        idle = getattr(pool, "checkedin", lambda: 0)()
        self.in_use.set(checked_out)
        self.idle.set(idle)

    def _stop_timer(self, conn: Any, *args: Any) -> None:
        start = conn.info.pop("sc_query_start", None)
        if start is not None:
            self.query_duration.observe(time.perf_counter() - start)

    # -- use -----------------------------------------------------------------------------
    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A pooled connection inside a transaction (committed on success)."""
        async with self._guard(), self._turn():
            start = time.perf_counter()
            async with self.engine.begin() as conn:
                self.acquire_duration.observe(time.perf_counter() - start)
                yield conn

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
        # autocommit: no BEGIN/COMMIT round trips around one statement
        async with (self._reads or self.engine).connect() as conn:
            self.acquire_duration.observe(time.perf_counter() - start)
            # (statement_timeout bounds it on the server too)
            async with asyncio.timeout(self.query_timeout):
                return (await conn.execute(statement, params)).all()

    async def fetch_one(self, statement: Executable,
                        params: dict[str, Any] | None = None) -> Row[Any] | None:
        """The first row of one small read, or ``None``."""
        rows = await self.fetch(statement, params)
        return rows[0] if rows else None

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` — ``connection`` a synchronous SQLAlchemy
        ``Connection`` — in one write transaction (committed on success), handed off in
        a single call: a transaction of many statements costs one thread hop instead of
        one per statement, which matters when the event loop is busy.

        On a SQLite file the call runs on the database's one writer thread, with its own
        connection (SQLite has a single writer anyway); elsewhere on a pooled
        connection. Bounded by ``query_timeout``; errors map as for :meth:`connect`. A
        transaction cut by the timeout on SQLite may still commit afterwards."""
        if self._writer is None:
            async with self.connect() as conn:
                return await conn.run_sync(fn, *args)
        async with self._guard(), asyncio.timeout(self.query_timeout):
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


class _Turns:
    """One transaction at a time on a shared connection; a task already holding its turn
    (a nested ``connect``) goes on, as it would on the same connection anyway."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._holder:
            yield
            return
        async with self._lock:
            self._holder = task
            try:
                yield
            finally:
                self._holder = None


class _WriterThread:
    """One thread holding one synchronous SQLite connection (see ``Database.write``)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.engine = create_engine(
            url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": timeout},
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc-sqlite-writer")

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn: Connection
        with self.engine.begin() as conn:
            return fn(conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._call, fn, args)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.engine.dispose()


class _ReaderSlow(Exception):
    pass


class _ReaderBusy(Exception):
    pass


class _LoopReader:
    """One synchronous SQLite connection used on the event loop for small reads.

    Never blocks the loop for long: the file's busy handler waits at most ``BUSY_MS``
    and a progress handler interrupts a statement running past ``BUDGET`` seconds (or
    the query timeout, if shorter); either way the read is then done by the pool."""

    BUSY_MS = 20
    BUDGET = 0.05

    def __init__(self, url: str, *, timeout: float) -> None:
        self.timeout = min(timeout, self.BUDGET)
        self.engine = create_engine(
            url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": self.BUSY_MS / 1000},
        )
        self._conn: Connection | None = None
        self._deadline = 0.0

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect()
            raw: Any = conn.connection.dbapi_connection
            raw.execute(f"PRAGMA busy_timeout={self.BUSY_MS}")
            raw.set_progress_handler(self._progress, 2000)
            self._conn = conn
        return self._conn

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def fetch(self, statement: Executable,
              params: dict[str, Any] | None) -> Sequence[Row[Any]]:
        conn = self._connection()
        self._deadline = time.monotonic() + self.timeout
        try:
            rows = conn.execute(statement, params).all()
            conn.rollback()  # (no transaction is open for a read; ends SQLAlchemy's)
            return rows
        except OperationalError as exc:
            conn.rollback()
            message = str(exc.orig).lower()
            if "interrupted" in message:
                raise _ReaderSlow from None
            if "locked" in message or "busy" in message:
                raise _ReaderBusy from None
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()


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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "busy_timeout=5000"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _start_timer(conn: Any, *args: Any) -> None:
    conn.info["sc_query_start"] = time.perf_counter()


def _is_query_timeout(exc: BaseException) -> bool:
    text_ = str(getattr(exc, "orig", exc)).lower()
    return ("statement timeout" in text_ or "canceling statement" in text_
            or text_ == "interrupted") or isinstance(
        getattr(exc, "orig", None), TimeoutError)


def _is_connection_error(exc: BaseException) -> bool:
    text_ = str(getattr(exc, "orig", exc)).lower()
    return any(s in text_ for s in ("connection", "connect", "closed", "terminat"))
