"""Cassandra for plugins that keep data there (chat's message store): one session per
app, bridged to asyncio, bounded and measured.

* The driver runs its own I/O thread; every statement goes through
  ``execute_async`` and its callbacks resolve an asyncio future with
  ``call_soon_threadsafe``, so the event loop never blocks on Cassandra.
* Each statement has a timeout (``query_timeout``, 5 s) → 503 ``database_timeout`` and
  ``cassandra_query_timeout_total{operation,table}``; latency in
  ``cassandra_query_duration_seconds{operation,table}``.
* Only statements declared idempotent are retried (exponential backoff with jitter),
  and never past the call's deadline — one ``query_timeout`` for the whole call.
  Lightweight transactions and other non-idempotent writes are tried once; the driver's
  own retry policy is switched off so that this is the only place retries happen.
* At most ``max_concurrent_requests`` statements are in flight per instance; more wait
  within the same deadline, then 503 ``database_unavailable``.
* A node that is down is a fast 503 ``database_unavailable`` (the driver marks it down
  and answers ``NoHostAvailable`` at once); the driver reconnects in the background
  (``reconnect_max_delay``), so the app recovers without a restart. If Cassandra is
  down at start-up the app still starts, reports not ready and keeps trying to connect.
* Schema changes are versioned per owner in ``<keyspace>.schema_migrations`` and
  applied by ``secureconnect migrate`` (or at start-up with ``database.auto_migrate``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..errors import ConfigError
from ..metrics import Metrics
from .sql import DatabaseTimeout, DatabaseUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CqlMigration:
    """One schema version of an owner: CQL statements run in order (``{keyspace}`` is
    replaced by the configured keyspace). Statements should be idempotent
    (``IF NOT EXISTS``) so a half-applied version can simply run again."""

    version: int
    description: str
    statements: Sequence[str]


@dataclass(frozen=True)
class Statement:
    """A prepared statement with the labels its metrics carry."""

    prepared: Any
    operation: str
    table: str
    idempotent: bool


class Cassandra:
    """The app's Cassandra session (``kernel.cassandra``); opened by the first plugin
    that needs it (``await kernel.cassandra.open()``), closed by the last."""

    def __init__(self, settings: Any, metrics: Metrics) -> None:
        self.settings = settings
        self.keyspace = str(settings.keyspace)
        if not self.keyspace.replace("_", "").isalnum():
            raise ConfigError(f"cassandra.keyspace {self.keyspace!r}: use letters, digits, _")
        self.query_timeout = float(settings.query_timeout)
        self.retry_attempts = int(settings.retry_attempts)
        self.retry_base_delay = float(settings.retry_base_delay)
        self._cluster: Any = None
        self._session: Any = None
        self._users = 0
        self._connecting: asyncio.Task[None] | None = None
        self._prepared: dict[str, Statement] = {}
        self._prepare_lock = asyncio.Lock()
        self._in_flight = asyncio.Semaphore(int(settings.max_concurrent_requests))
        self.timeouts = metrics.counter(
            "cassandra_query_timeout_total", "Cassandra statements that timed out",
            ("operation", "table"))
        self.duration = metrics.histogram(
            "cassandra_query_duration_seconds", "Cassandra statement latency",
            ("operation", "table"))
        self.errors = metrics.counter(
            "cassandra_query_errors_total", "Cassandra statements that failed (not timeouts)",
            ("operation", "table"))
        self.retries = metrics.counter(
            "cassandra_query_retries_total", "Retries of idempotent Cassandra statements",
            ("operation", "table"))

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._session is not None

    async def open(self) -> None:
        """Start connecting (reference-counted). Returns once connected or after the
        first attempt failed — then a background task keeps trying."""
        self._users += 1
        if self._users > 1:
            return
        try:
            await self._connect()
        except Exception as exc:  # degrade: serve 503s and keep trying
            log.warning("cassandra: cannot connect yet (%s); retrying in the background",
                        type(exc).__name__)
            self._connecting = asyncio.create_task(self._keep_connecting(),
                                                   name="cassandra-connect")

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        cluster, self._cluster, self._session = self._cluster, None, None
        self._prepared.clear()
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    async def _keep_connecting(self) -> None:
        delay = 0.5
        while self._session is None:
            await asyncio.sleep(delay)
            try:
                await self._connect()
            except Exception as exc:
                log.debug("cassandra: still unavailable (%s)", type(exc).__name__)
                delay = min(delay * 2, float(self.settings.reconnect_max_delay))
        log.info("cassandra: connected")

    async def _connect(self) -> None:
        cluster = self._make_cluster()
        try:
            session = await asyncio.wait_for(asyncio.to_thread(cluster.connect),
                                             timeout=float(self.settings.connect_timeout) * 2)
        except BaseException:
            await asyncio.to_thread(cluster.shutdown)
            raise
        self._cluster, self._session = cluster, session

    def _make_cluster(self) -> Any:
        from cassandra import ConsistencyLevel
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import (
            DCAwareRoundRobinPolicy,
            ExponentialReconnectionPolicy,
            FallthroughRetryPolicy,
            TokenAwarePolicy,
        )
        from cassandra.query import dict_factory

        s = self.settings
        local_dc = str(s.local_dc) or None
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=local_dc)),
            retry_policy=FallthroughRetryPolicy(),
            consistency_level=getattr(ConsistencyLevel, str(s.consistency)),
            serial_consistency_level=getattr(ConsistencyLevel, str(s.serial_consistency)),
            request_timeout=self.query_timeout,
            row_factory=dict_factory,
        )
        auth = None
        if str(s.username):
            auth = PlainTextAuthProvider(username=str(s.username), password=str(s.password))
        return Cluster(
            contact_points=list(s.contact_points),
            port=int(s.port),
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connection_class=_connection_class(),
            connect_timeout=float(s.connect_timeout),
            control_connection_timeout=float(s.connect_timeout),
            reconnection_policy=ExponentialReconnectionPolicy(
                0.5, float(s.reconnect_max_delay)),
            idle_heartbeat_interval=10,
            auth_provider=auth,
            protocol_version=int(s.protocol_version),
        )

    # -- statements --------------------------------------------------------------------
    async def prepare(self, cql: str, *, operation: str, table: str,
                      idempotent: bool) -> Statement:
        """Prepare ``cql`` once (``{keyspace}`` is filled in); cached per text."""
        text = cql.replace("{keyspace}", self.keyspace)
        found = self._prepared.get(text)
        if found is not None:
            return found
        session = self._require_session()
        async with self._prepare_lock:
            found = self._prepared.get(text)
            if found is None:
                try:
                    prepared = await asyncio.wait_for(
                        asyncio.to_thread(session.prepare, text), timeout=self.query_timeout)
                except TimeoutError:
                    self.timeouts.labels(operation, table).inc()
                    raise DatabaseTimeout("Cassandra did not answer in time") from None
                except Exception as exc:
                    mapped = _unavailable(exc)
                    if mapped is None:
                        raise
                    raise mapped from None
                prepared.is_idempotent = idempotent
                found = Statement(prepared, operation, table, idempotent)
                self._prepared[text] = found
        return found

    async def execute(self, statement: Statement, params: Sequence[Any] = (),
                      *, timeout: float | None = None) -> list[dict[str, Any]]:
        """Run a prepared statement; rows as dicts (first page only — use LIMIT)."""
        budget = self.query_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        attempts = self.retry_attempts if statement.idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._execute_once(statement, params, deadline)
            except (DatabaseTimeout, DatabaseUnavailable):
                delay = self.retry_base_delay * 2 ** (attempt - 1) * (0.5 + random.random())
                if attempt == attempts or time.monotonic() + delay >= deadline:
                    raise
                self.retries.labels(statement.operation, statement.table).inc()
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def execute_cql(self, cql: str, params: Sequence[Any] = (), *,
                          timeout: float | None = None) -> list[dict[str, Any]]:
        """Run an unprepared statement (schema changes, one-off reads)."""
        session = self._require_session()
        text = cql.replace("{keyspace}", self.keyspace)
        return await self._run(session, text, params, "ddl", "schema",
                               time.monotonic() + (timeout or self.query_timeout))

    async def _execute_once(self, statement: Statement, params: Sequence[Any],
                            deadline: float) -> list[dict[str, Any]]:
        session = self._require_session()
        return await self._run(session, statement.prepared, params, statement.operation,
                               statement.table, deadline)

    async def _run(self, session: Any, query: Any, params: Sequence[Any], operation: str,
                   table: str, deadline: float) -> list[dict[str, Any]]:
        from cassandra import OperationTimedOut, ReadTimeout, WriteTimeout

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self.timeouts.labels(operation, table).inc()
            raise DatabaseTimeout("Cassandra did not answer in time")
        start = time.perf_counter()
        try:
            async with asyncio.timeout(remaining):
                async with self._in_flight:
                    left = max(0.001, deadline - time.monotonic())
                    return await _resolve(session.execute_async(query, params, timeout=left))
        except (TimeoutError, OperationTimedOut, ReadTimeout, WriteTimeout):
            self.timeouts.labels(operation, table).inc()
            raise DatabaseTimeout("Cassandra did not answer in time") from None
        except (DatabaseTimeout, DatabaseUnavailable):
            raise
        except Exception as exc:
            self.errors.labels(operation, table).inc()
            mapped = _unavailable(exc)
            if mapped is None:
                raise
            raise mapped from None
        finally:
            self.duration.labels(operation, table).observe(time.perf_counter() - start)

    def _require_session(self) -> Any:
        if self._session is None:
            raise DatabaseUnavailable("Cassandra is not connected; retry shortly")
        return self._session

    async def ping(self) -> None:
        session = self._require_session()
        await self._run(session, "SELECT release_version FROM system.local", (), "select",
                        "system.local", time.monotonic() + min(self.query_timeout, 2.0))

    # -- schema ------------------------------------------------------------------------
    async def migrate(self, owner: str, migrations: Sequence[CqlMigration]) -> list[str]:
        """Create the keyspace if needed and apply ``owner``'s versions not yet applied;
        one line per applied version."""
        ddl_timeout = max(30.0, self.query_timeout)
        replication = ", ".join(f"'{k}': {_cql_literal(v)}"
                                for k, v in dict(self.settings.replication).items())
        await self.execute_cql(
            f"CREATE KEYSPACE IF NOT EXISTS {{keyspace}} WITH replication = {{{replication}}}",
            timeout=ddl_timeout)
        await self.execute_cql(
            "CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations ("
            " owner text, version int, description text, applied_at timestamp,"
            " PRIMARY KEY (owner, version))", timeout=ddl_timeout)
        rows = await self.execute_cql(
            "SELECT version FROM {keyspace}.schema_migrations WHERE owner = %s", (owner,))
        done = {int(r["version"]) for r in rows}
        applied = []
        for migration in sorted(migrations, key=lambda m: m.version):
            if migration.version in done:
                continue
            for cql in migration.statements:
                await self.execute_cql(cql, timeout=ddl_timeout)
            await self.execute_cql(
                "INSERT INTO {keyspace}.schema_migrations (owner, version, description,"
                " applied_at) VALUES (%s, %s, %s, %s)",
                (owner, migration.version, migration.description, datetime.now(UTC)))
            applied.append(f"{owner} (cassandra): {migration.version} {migration.description}")
            log.info("cassandra: applied %s version %d", owner, migration.version)
        return applied


def _cql_literal(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _connection_class() -> Any:
    try:  # the C reactor (libev) when the driver was built with it
        from cassandra.io.libevreactor import LibevConnection

        return LibevConnection
    except ImportError:  # pragma: no cover - depends on the wheel
        from cassandra.io.asyncioreactor import AsyncioConnection

        return AsyncioConnection


def _unavailable(exc: BaseException) -> DatabaseUnavailable | None:
    from cassandra import (
        DriverException,
        RequestExecutionException,
        RequestValidationException,
    )
    from cassandra.cluster import NoHostAvailable
    from cassandra.connection import ConnectionException

    if isinstance(exc, RequestValidationException):  # a bug in our CQL: a 500, not a 503
        return None
    if isinstance(exc, NoHostAvailable | ConnectionException | RequestExecutionException
                  | DriverException | OSError):
        log.warning("cassandra unavailable: %s", type(exc).__name__)
        return DatabaseUnavailable("Cassandra is unavailable; retry shortly")
    return None


def _resolve(future: Any) -> asyncio.Future[list[dict[str, Any]]]:
    """An asyncio future for the driver's ``ResponseFuture`` (resolved on the loop)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[list[dict[str, Any]]] = loop.create_future()

    def done(rows: Any) -> None:
        loop.call_soon_threadsafe(_set, result, list(rows or ()), None)

    def failed(exc: BaseException) -> None:
        loop.call_soon_threadsafe(_set, result, None, exc)

    future.add_callbacks(done, failed)
    return result


def _set(result: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if result.done():  # the caller gave up (timeout/cancel)
        return
    if exc is not None:
        result.set_exception(exc)
    else:
        result.set_result(value)
