"""SQLite's own connections beside the pool (see :mod:`.sql`): the single writer thread,
the loop reader for small reads, turns on an in-memory database's one connection, and
the pragmas every SQLite connection gets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from operator import itemgetter
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Executable, Row, create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

T = TypeVar("T")
log = logging.getLogger(__name__)
#: ``fetch(statement, params=None)`` → rows, inside :meth:`Database.read`
Fetch = Callable[..., Sequence[Any]]


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
    """The database's one writing connection (see ``Database.write``): a thread of its
    own for any transaction, and — for a short one that may run twice — the event loop.

    On the loop (:meth:`run_here`) a transaction runs under a budget of ``BUDGET``
    seconds with a busy wait of at most ``BUSY_MS``; past either it is interrupted,
    rolled back and run again on the thread. That spares the send path two thread
    wake-ups per group commit, which on a busy machine cost tens of ms each at the
    tail. The commit itself is never interrupted.

    Checkpoints: the writing connection does not checkpoint on commit
    (``wal_autocheckpoint=0``, so a commit never waits for a checkpoint's fsyncs on the
    loop); a background thread runs a PASSIVE checkpoint (it blocks neither writers
    nor readers) ``CHECKPOINT_AFTER`` seconds after a write, and again while writes keep
    coming. ``synchronous=NORMAL`` as before: a commit is durable against a crash of the
    process; against power loss up to the last checkpoint, now at most about a second
    behind (the automatic checkpoint ran only once the WAL reached 1,000 pages)."""

    BUSY_MS = 20
    BUDGET = 0.05
    CHECKPOINT_AFTER = 1.0

    def __init__(self, url: str, *, timeout: float,
                 on_fallback: Callable[[], None] | None = None) -> None:
        self.engine = create_engine(
            url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": timeout},
        )
        self.path = make_url(self.engine.url).database or ""
        self.timeout = timeout
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc-sqlite-writer")
        self._checkpointer = ThreadPoolExecutor(max_workers=1,
                                                thread_name_prefix="sc-sqlite-checkpoint")
        self._pending = 0  # transactions handed to the thread and not finished
        self._raw: Any = None
        self._on_loop = False  # the connection's busy timeout is the loop's
        self._deadline = float("inf")
        self._writes = 0
        self._checkpoint_timer: asyncio.TimerHandle | None = None
        self._checkpointing = False
        self._on_fallback = on_fallback

    def _raw_connection(self) -> Any:
        if self._raw is None:
            with self.engine.connect() as conn:  # (StaticPool: always this connection)
                raw: Any = conn.connection.dbapi_connection
            raw.execute("PRAGMA wal_autocheckpoint=0")
            raw.set_progress_handler(self._progress, 2000)
            self._raw = raw
        return self._raw

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def _busy_wait(self, on_loop: bool) -> None:
        if on_loop != self._on_loop:
            ms = self.BUSY_MS if on_loop else int(self.timeout * 1000)
            self._raw_connection().execute(f"PRAGMA busy_timeout={ms}")
            self._on_loop = on_loop

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        self._busy_wait(False)
        conn: Connection
        with self.engine.begin() as conn:
            return fn(conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in one transaction on the writer thread."""
        loop = asyncio.get_running_loop()
        self._raw_connection()
        self._pending += 1
        future = loop.run_in_executor(self.executor, self._call, fn, args)
        future.add_done_callback(self._thread_done)
        return await future

    def _thread_done(self, _future: Any) -> None:
        self._pending -= 1
        self.wrote()

    async def run_here(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in one transaction on the event loop, or — while
        the thread has work, or past the budget or busy wait — on the thread (then
        ``fn`` has run twice: its first transaction was rolled back)."""
        if self._pending:
            return await self.run(fn, *args)  # (after the thread's work, in order)
        raw = self._raw_connection()
        self._busy_wait(True)
        conn = self.engine.connect()
        try:
            self._deadline = time.monotonic() + self.BUDGET
            try:
                trans = conn.begin()
                result = fn(conn, *args)
            finally:
                self._deadline = float("inf")
            trans.commit()  # (never interrupted: no budget left to run out)
        except OperationalError as exc:
            if conn.in_transaction():
                conn.rollback()
            if raw.in_transaction:
                raw.rollback()
            message = str(exc.orig).lower()
            if not ("interrupted" in message or "locked" in message or "busy" in message):
                raise
            if self._on_fallback is not None:
                self._on_fallback()
        else:
            self.wrote()
            return result
        finally:
            conn.close()
        return await self.run(fn, *args)

    def wrote(self) -> None:
        """A transaction was committed: a checkpoint follows within ``CHECKPOINT_AFTER``."""
        self._writes += 1
        if self._checkpoint_timer is None and not self._checkpointing:
            with contextlib.suppress(RuntimeError):  # (no running loop: at close)
                self._checkpoint_timer = asyncio.get_running_loop().call_later(
                    self.CHECKPOINT_AFTER, self._start_checkpoint)

    def _start_checkpoint(self) -> None:
        self._checkpoint_timer = None
        self._checkpointing = True
        writes = self._writes
        future = asyncio.get_running_loop().run_in_executor(self._checkpointer,
                                                            self._checkpoint)

        def done(f: asyncio.Future[None]) -> None:
            self._checkpointing = False
            if not f.cancelled() and f.exception() is not None:
                log.warning("SQLite background checkpoint failed: %s", f.exception())
            if self._writes != writes:  # written meanwhile: once more
                self.wrote()

        future.add_done_callback(done)

    def _checkpoint(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self.BUSY_MS / 1000)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()

    def stop_checkpoints(self) -> None:
        """No more scheduled checkpoints (on the loop, before :meth:`close`)."""
        timer, self._checkpoint_timer = self._checkpoint_timer, None
        if timer is not None:
            timer.cancel()
        self._checkpointing = True  # (a running one finishes; none follows)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        self._raw = None
        self.engine.dispose()  # (the last connection closed checkpoints the rest)


class ReaderSlow(Exception):
    pass


class ReaderBusy(Exception):
    pass


class FastRow(tuple):  # type: ignore[type-arg]
    """A row of the loop reader's fast path: what callers use of SQLAlchemy's ``Row``
    — index, attribute by column key, ``_mapping`` (a dict) — and nothing else."""

    __slots__ = ()
    _keys: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._keys, self, strict=True))


def _row_class(keys: tuple[str, ...]) -> type[FastRow]:
    attrs: dict[str, Any] = {"__slots__": (), "_keys": keys}
    for i, key in enumerate(keys):
        if key.isidentifier() and not key.startswith("_") and not hasattr(tuple, key):
            attrs[key] = property(itemgetter(i))
    return type("FastRow", (FastRow,), attrs)


class _Plan:
    """One statement compiled once for the sqlite3 connection: its SQL, the order of
    its parameters (with their defaults and bind processors) and its columns' result
    processors — what SQLAlchemy would do per execution, done once."""

    __slots__ = ("binders", "defaults", "names", "processors", "row", "sql")

    def __init__(self, compiled: Any, dialect: Any) -> None:
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        binds = compiled.binds
        self.defaults = {n: binds[n].effective_value for n in self.names
                         if not binds[n].required}
        processors = compiled._bind_processors
        self.binders = tuple(processors.get(n) for n in self.names)
        columns = compiled._result_columns
        self.processors: tuple[Any, ...] | None = tuple(
            c.type._cached_result_processor(dialect, None) for c in columns)
        if not any(self.processors):
            self.processors = None
        self.row = _row_class(tuple(c.keyname for c in columns))

    @classmethod
    def build(cls, statement: Executable, dialect: Any) -> _Plan | None:
        """``None`` for what the plan does not cover (expanding or literal parameters,
        duplicate column keys): SQLAlchemy runs those."""
        if not getattr(statement, "is_select", False):
            return None
        compiled: Any = cast(Any, statement).compile(dialect=dialect)
        if (compiled.literal_execute_params or compiled.post_compile_params
                or (compiled.positiontup is None and compiled.binds)):
            return None
        keys = [c.keyname for c in compiled._result_columns]
        if len(set(keys)) != len(keys) or any(
                n not in compiled.binds for n in compiled.positiontup or ()):
            return None
        return cls(compiled, dialect)

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, binder in zip(self.names, self.binders, strict=True):
            value = params[name] if name in params else self.defaults[name]
            out.append(value if binder is None else binder(value))
        return tuple(out)

    def rows(self, raw: list[Any]) -> list[Any]:
        make = self.row
        procs = self.processors
        if procs is None:
            return [make(r) for r in raw]
        return [make([v if p is None else p(v) for p, v in zip(procs, r, strict=True)])
                for r in raw]


class Plans:
    """Plans by statement (identity), at most ``limit`` of them: statements built once
    at import time, not one per call."""

    def __init__(self, dialect: Any, limit: int = 512) -> None:
        self.dialect = dialect
        self.limit = limit
        # id(statement) -> (statement, plan): the statement is kept so its id stays its own
        self._plans: dict[int, tuple[Executable, _Plan | None]] = {}

    def get(self, statement: Executable) -> _Plan | None:
        found = self._plans.get(id(statement))
        if found is not None and found[0] is statement:
            return found[1]
        if len(self._plans) >= self.limit:
            return None
        try:
            plan = _Plan.build(statement, self.dialect)
        except Exception:
            plan = None  # (SQLAlchemy runs it, and words any error)
        self._plans[id(statement)] = (statement, plan)
        return plan

    def clear(self) -> None:
        self._plans.clear()


class LoopReader:
    """One synchronous SQLite connection used on the event loop for small reads.

    Never blocks the loop for long: the file's busy handler waits at most ``BUSY_MS``
    and a progress handler interrupts a statement running past ``BUDGET`` seconds (or
    the query timeout, if shorter); either way the read is then done by the pool.

    A statement built once (the caller passes ``params`` for its bind parameters) is
    compiled once into a :class:`_Plan` and then runs on the sqlite3 connection
    directly, without SQLAlchemy's per-execution work (about a fifth of a small
    authenticated read); its rows are :class:`FastRow` objects."""

    BUSY_MS = 20
    BUDGET = 0.05
    MAX_PLANS = 512

    def __init__(self, url: str, *, timeout: float,
                 observe: Callable[[float], None] | None = None) -> None:
        self.timeout = min(timeout, self.BUDGET)
        self.engine = create_engine(
            url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
            poolclass=StaticPool,
            connect_args={"check_same_thread": False, "timeout": self.BUSY_MS / 1000},
        )
        self._conn: Connection | None = None
        self._raw: Any = None
        self._deadline = 0.0
        self._observe = observe
        self._plans = Plans(self.engine.dialect, self.MAX_PLANS)

    def _connection(self) -> Connection:
        if self._conn is None:
            conn = self.engine.connect()
            raw: Any = conn.connection.dbapi_connection
            raw.execute(f"PRAGMA busy_timeout={self.BUSY_MS}")
            raw.set_progress_handler(self._progress, 2000)
            self._conn = conn
            self._raw = raw
        return self._conn

    def _progress(self) -> int:
        return 1 if time.monotonic() > self._deadline else 0

    def fetch(self, statement: Executable,
              params: dict[str, Any] | None) -> Sequence[Row[Any]]:
        conn = self._connection()
        plan = self._plans.get(statement) if params is not None else None
        if plan is not None:
            rows: Sequence[Any] | None = self._fetch_plan(plan, params or {})
            if rows is not None:
                return rows
        self._deadline = time.monotonic() + self.timeout
        try:
            result = conn.execute(statement, params).all()
            conn.rollback()  # (no transaction is open for a read; ends SQLAlchemy's)
            return result
        except OperationalError as exc:
            conn.rollback()
            message = str(exc.orig).lower()
            if "interrupted" in message:
                raise ReaderSlow from None
            if "locked" in message or "busy" in message:
                raise ReaderBusy from None
            raise

    def read(self, fn: Callable[[Fetch], T]) -> T:
        """``fn(fetch)`` with every ``fetch(statement, params)`` in one read transaction
        (one snapshot: WAL gives the state of the last commit before the first read),
        on the loop, under one budget. Raises :class:`ReaderSlow`/:class:`ReaderBusy`
        as :meth:`fetch` does; the caller then runs ``fn`` off the loop."""
        conn = self._connection()
        raw = self._raw
        self._deadline = time.monotonic() + self.timeout

        def fetch(statement: Executable, params: dict[str, Any] | None = None) -> Any:
            plan = self._plans.get(statement) if params is not None else None
            if plan is not None:
                try:
                    return plan.rows(raw.execute(plan.sql, plan.args(params or {})).fetchall())
                except (sqlite3.Error, KeyError) as exc:
                    _reader_error(exc)
            try:
                return conn.execute(statement, params).all()
            except OperationalError as exc:
                _reader_error(exc.orig or exc)
                raise

        try:
            raw.execute("BEGIN")
            return fn(fetch)
        finally:
            if conn.in_transaction():
                conn.rollback()  # (ends SQLAlchemy's, and the sqlite3 transaction)
            if raw.in_transaction:
                raw.rollback()

    def _fetch_plan(self, plan: _Plan, params: dict[str, Any]) -> list[Any] | None:
        """The rows, or ``None`` to let SQLAlchemy run it (and word any error)."""
        try:
            args = plan.args(params)
        except Exception:
            return None  # (a missing or unbindable parameter: SQLAlchemy's error)
        raw = self._raw
        start = time.perf_counter()
        self._deadline = time.monotonic() + self.timeout
        try:
            found = raw.execute(plan.sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if "interrupted" in message:
                raise ReaderSlow from None
            if "locked" in message or "busy" in message:
                raise ReaderBusy from None
            return None
        except sqlite3.Error:
            return None
        finally:
            if raw.in_transaction:  # (a SELECT opens none; never leave one open)
                raw.rollback()
        if self._observe is not None:
            self._observe(time.perf_counter() - start)
        return plan.rows(found)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._raw = None
        self._plans.clear()
        self.engine.dispose()


def _reader_error(exc: BaseException) -> None:
    """Raise ReaderSlow/ReaderBusy for an interrupted or busy read; else return."""
    message = str(exc).lower()
    if "interrupted" in message:
        raise ReaderSlow from None
    if "locked" in message or "busy" in message:
        raise ReaderBusy from None


def sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   "busy_timeout=5000"):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()
