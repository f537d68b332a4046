"""Fixtures for the chat black-box tests: a real app (auth, WebSocket gateway, chat) on
a file SQLite database — concurrent writers need real connections.

Every test that uses ``chat_client`` runs three times, unchanged (``message_store``
parameter): the SQL store on a SQLite file, the SQL store on PostgreSQL (a fresh
database of the session's server) and the Cassandra store against the real server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from .helpers import SQLITE_FILE, merge


@pytest.fixture(params=[
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("cassandra", marks=pytest.mark.cassandra),
])
def message_store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select the message store under test."""
    if request.param == "sqlite":
        return {}
    if request.param == "postgres":
        return {"database": {"url": request.getfixturevalue("postgres_url")}}
    server = request.getfixturevalue("cassandra_server")
    return {
        "chat": {"message_store": "cassandra"},
        "cassandra": {"contact_points": [server.host], "port": server.port,
                      "keyspace": "sc_chat_tests"},
    }


@pytest.fixture
def chat_client(
    sc_client: Callable[..., Awaitable[Any]], message_store: dict[str, Any]
) -> Callable[..., Awaitable[Any]]:
    """``await chat_client(overrides)`` → a test client on a fresh file database."""

    async def factory(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        base = merge({"database": {"url": SQLITE_FILE}}, message_store)
        return await sc_client(merge(base, overrides), **kwargs)

    return factory
