"""Fixtures for the polls black-box tests: a real app (auth, WebSocket gateway, chat,
polls) on a file SQLite database — concurrent writers need real connections, not one
shared in-memory connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from .helpers import SQLITE_FILE, merge


@pytest.fixture
def polls_client(sc_client: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``await polls_client(overrides)`` → a test client on a fresh file database."""

    async def factory(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        settings = merge({"database": {"url": SQLITE_FILE}}, overrides)
        return await sc_client(settings, **kwargs)

    return factory
