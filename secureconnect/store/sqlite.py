"""SQLite's own connections beside the pool (see :mod:`.sql`): the single writer thread,
the loop reader for small reads, turns on an in-memory database's one connection, and
the pragmas every SQLite connection gets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Executable, Row, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

T = TypeVar("T")


class Turns:
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


class WriterThread:
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


class ReaderSlow(Exception):
    pass


class ReaderBusy(Exception):
    pass


class LoopReader:
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
                raise ReaderSlow from None
            if "locked" in message or "busy" in message:
                raise ReaderBusy from None
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "busy_timeout=5000"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()
