"""Suite-wide fixtures for real services. App fixtures live in secureconnect.testing.

With ``SC_TEST_REQUIRE_SERVICES=1`` (set by .ci/run) a service that is not installed
fails its tests instead of skipping them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from secureconnect.testing.services import CassandraServer, PostgresServer, RedisServer

REQUIRE_SERVICES = os.environ.get("SC_TEST_REQUIRE_SERVICES") == "1"
_db_counter = itertools.count()


def _unavailable(name: str) -> None:
    message = f"{name} is not installed here (run `make services`)"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private Redis for this test: stop and restart it to simulate outages."""
    if not RedisServer.available():
        _unavailable("redis-server")
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL per test session (per xdist worker)."""
    if not PostgresServer.available():
        _unavailable("PostgreSQL")
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database of the session's PostgreSQL for this test."""
    if not postgres_server.running:  # a test stopped it: bring it back for the next
        postgres_server.start()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "w")
    return postgres_server.create_database(f"t_{worker}_{next(_db_counter)}")


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL for this test alone: stop it to simulate a database outage."""
    if not PostgresServer.available():
        _unavailable("PostgreSQL")
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def cassandra_server() -> Iterator[CassandraServer]:
    """One private single-node Cassandra per test session (it takes ~10-20 s to start).
    A test may stop it to simulate an outage; it is started again for the next test."""
    if not CassandraServer.available():
        _unavailable("Cassandra (java + scripts/services/cassandra.sh)")
    server = CassandraServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _cassandra_running(request: pytest.FixtureRequest) -> None:
    """Bring the session's Cassandra back if an earlier test left it stopped."""
    if "cassandra_server" in request.fixturenames:
        server: CassandraServer = request.getfixturevalue("cassandra_server")
        if not server.running:
            server.start()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The table of the system trials (tests/system), when any ran."""
    from tests.system.report import print_trials

    print_trials(terminalreporter)
