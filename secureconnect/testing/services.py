"""Private, throwaway servers for integration tests: Redis, PostgreSQL, Cassandra and
moto (an S3-compatible server).

Each instance binds 127.0.0.1 on a free port with its data in a temporary directory,
so tests can run in parallel and may stop and restart "their" server at will
(``stop()`` / ``start()`` / ``restart()`` keep the port and the data).

    with RedisServer() as redis:
        settings = {"redis": {"url": redis.url}}
        redis.stop()      # a real outage
        redis.start()     # and a real recovery
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class ServiceError(RuntimeError):
    """A server failed to start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class _Server:
    name = "server"
    #: the signal that stops the server promptly (PostgreSQL: SIGINT, "fast" shutdown)
    stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"sc-{self.name}-"))
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / f"{self.name}.log"

    # subclasses: _command(), _ready(), optional _prepare() and _after_start()
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        return _port_open(self.port)

    def _prepare(self) -> None:
        return None

    def _after_start(self) -> None:
        return None

    def _popen_extra(self) -> dict[str, Any]:
        return {}

    def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        self._prepare()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, **self._popen_extra())
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} not ready within {timeout} s:\n{self.tail()}")
            time.sleep(0.05)
        self._after_start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisServer(_Server):
    name = "redis"

    @classmethod
    def available(cls) -> bool:
        return shutil.which("redis-server") is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--protected-mode", "yes"]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.3) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def _moto_command() -> list[str] | None:
    found = shutil.which("moto_server")
    if found is None:
        # installed in the running interpreter's environment but not on PATH
        candidate = Path(sys.executable).with_name("moto_server")
        found = str(candidate) if candidate.exists() else None
    return None if found is None else [found]


class MotoServer(_Server):
    """moto_server: an in-memory S3 API (``pip install moto[server]``, the test extra).
    A restart loses every bucket and object, like a real outage that loses data."""

    name = "moto"

    @classmethod
    def available(cls) -> bool:
        return _moto_command() is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = _moto_command()
        if command is None:
            raise ServiceError("moto_server is not installed (pip install 'moto[server]')")
        return [*command, "-H", "127.0.0.1", "-p", str(self.port)]

    def _ready(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.3) as s:
                s.sendall(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return s.recv(16).startswith(b"HTTP/")
        except OSError:
            return False


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class PostgresServer(_Server):
    """A private PostgreSQL cluster (initdb on first start), tuned for tests."""

    name = "postgres"
    # SIGTERM waits for every client to disconnect; SIGINT ends their sessions now
    stop_signal = signal.SIGINT
    user = "secureconnect"
    password = "secureconnect"
    database = "secureconnect"

    def __init__(self) -> None:
        super().__init__()
        bindir = _pg_bindir()
        if bindir is None:
            raise ServiceError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0

    @classmethod
    def available(cls) -> bool:
        return _pg_bindir() is not None

    @property
    def dsn(self) -> str:
        return (f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{self.database}")

    @property
    def url(self) -> str:
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://", 1)

    def url_for(self, database: str) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{database}"

    def _run(self, *cmd: str) -> None:
        full = list(cmd)
        if self._as_postgres:
            full = ["runuser", "-u", "postgres", "--", *full]
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    def _prepare(self) -> None:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            pwfile = self.dir / "pw"
            pwfile.write_text(self.password)
            if self._as_postgres:
                shutil.chown(pwfile, "postgres", "postgres")
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                      "-A", "scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8",
                      "--no-sync")
            self._created = False

    def _popen_extra(self) -> dict[str, Any]:
        if self._as_postgres:
            return {"user": "postgres", "group": "postgres"}
        return {}

    def _command(self) -> list[str]:
        return [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off", "-c", "max_connections=200"]

    def _ready(self) -> bool:
        if not _port_open(self.port):
            return False
        r = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p",
                            str(self.port)], capture_output=True, timeout=10)
        return r.returncode == 0

    def _after_start(self) -> None:
        if getattr(self, "_created", True):
            return
        self.create_database(self.database)
        self._created = True

    def create_database(self, name: str) -> str:
        """Create a database (for per-test isolation); returns its asyncpg URL."""
        env = {"PGPASSWORD": self.password, "PATH": "/usr/bin:/bin"}
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p",
                        str(self.port), "-U", self.user, name],
                       check=True, capture_output=True, timeout=60, env=env)
        return self.url_for(name)


REPO = Path(__file__).resolve().parents[2]
CASSANDRA_SCRIPT = REPO / "scripts" / "services" / "cassandra.sh"

# Java 17 module flags Cassandra 5.0 needs (its conf/jvm17-server.options and friends).
_JPMS_EXPORTS = [
    "java.base/jdk.internal.misc", "java.base/jdk.internal.ref", "java.base/sun.nio.ch",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.management/com.sun.jmx.remote.security", "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server", "java.sql/java.sql", "java.base/java.lang.ref",
    "jdk.unsupported/sun.misc", "jdk.compiler/com.sun.tools.javac.file",
    "jdk.attach/sun.tools.attach",
]
_JPMS_OPENS = [
    "java.base/java.lang.module", "java.base/jdk.internal.loader",
    "java.base/jdk.internal.ref", "java.base/jdk.internal.reflect",
    "java.base/jdk.internal.math", "java.base/jdk.internal.module",
    "java.base/jdk.internal.util.jar", "jdk.management/com.sun.management.internal",
    "java.base/sun.nio.ch", "java.base/java.io", "java.base/java.nio",
    "java.base/java.lang.reflect", "java.base/java.lang", "java.base/java.util",
    "java.base/java.util.concurrent", "java.base/java.util.concurrent.atomic",
    "jdk.compiler/com.sun.tools.javac",
]

_CASSANDRA_YAML = """\
cluster_name: secureconnect-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {storage_port}
native_transport_port: {port}
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{storage_port}"
data_file_directories: [{dir}/data]
commitlog_directory: {dir}/commitlog
saved_caches_directory: {dir}/saved_caches
hints_directory: {dir}/hints
cdc_raw_directory: {dir}/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10s
auto_snapshot: false
incremental_backups: false
memtable_allocation_type: heap_buffers
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
key_cache_size: 16MiB
"""

_LOGBACK = """\
<configuration>
  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level %date{ISO8601} [%thread] %logger{20} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="OUT"/></root>
</configuration>
"""


def cassandra_home() -> Path | None:
    """The folder with ``lib/`` of Cassandra's jars (fetched by scripts/services/
    cassandra.sh, which is run when needed); ``None`` without java or the script."""
    if shutil.which("java") is None or not CASSANDRA_SCRIPT.exists():
        return None
    r = subprocess.run(["bash", str(CASSANDRA_SCRIPT)], capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0:
        raise ServiceError(f"scripts/services/cassandra.sh failed:\n{r.stderr[-2000:]}")
    return Path(r.stdout.strip().splitlines()[-1])


class CassandraServer(_Server):
    """A private single-node Cassandra 5.0 (1 GB heap) on free loopback ports.

    ``stop()`` keeps the data, so ``start()`` brings the same node back (an outage)."""

    name = "cassandra"

    def __init__(self, home: Path | None = None) -> None:
        super().__init__()
        found = home or cassandra_home()
        if found is None:
            raise ServiceError("Cassandra needs java and scripts/services/cassandra.sh")
        self.home = found
        self.storage_port = free_port()

    @classmethod
    def available(cls) -> bool:
        return shutil.which("java") is not None and CASSANDRA_SCRIPT.exists()

    @property
    def contact_points(self) -> list[str]:
        return [self.host]

    def _prepare(self) -> None:
        (self.dir / "cassandra.yaml").write_text(_CASSANDRA_YAML.format(
            dir=self.dir, port=self.port, storage_port=self.storage_port))
        (self.dir / "logback.xml").write_text(_LOGBACK)
        (self.dir / "triggers").mkdir(exist_ok=True)

    def _command(self) -> list[str]:
        lib = self.home / "lib"
        jamm = sorted(lib.glob("jamm-*.jar"))[-1]
        flags = [f"--add-exports={m}=ALL-UNNAMED" for m in _JPMS_EXPORTS]
        flags += [f"--add-opens={m}=ALL-UNNAMED" for m in _JPMS_OPENS]
        d = self.dir
        return [
            "java", "-Xms1G", "-Xmx1G", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
            "-Xss512k", f"-javaagent:{jamm}",
            "-Djava.net.preferIPv4Stack=true", "-Djava.security.manager=allow",
            "-Djdk.attach.allowAttachSelf=true", "-Dio.netty.tryReflectionSetAccessible=true",
            *flags,
            f"-Dcassandra.config=file://{d}/cassandra.yaml",
            f"-Dcassandra.storagedir={d}", f"-Dcassandra.logdir={d}/logs",
            f"-Dcassandra.triggers_dir={d}/triggers",
            f"-Dlogback.configurationFile={d}/logback.xml",
            "-Dcassandra-foreground=yes",
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.unsafesystem=true",
            "-Dcassandra.superuser_setup_delay_ms=0",
            "-cp", f"{lib}/*", "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _ready(self) -> bool:
        if not _port_open(self.port):
            return False
        try:
            return b"Starting listening for CQL clients" in self.log.read_bytes()[-200_000:]
        except OSError:
            return False

    def start(self, timeout: float = 180.0) -> None:
        # the readiness line of an earlier run must not count for this one
        if self.log.exists() and not self.running:
            self.log.rename(self.log.with_suffix(f".{int(time.time() * 1000)}.log"))
        super().start(timeout=timeout)
