"""Fixtures for the chat black-box tests: a real app (auth, WebSocket gateway, chat) on
a file SQLite database — concurrent writers need real connections."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from .helpers import SQLITE_FILE, merge


@pytest.fixture
def chat_client(sc_client: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``await chat_client(overrides)`` → a test client on a fresh file database."""

    async def factory(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        return await sc_client(merge({"database": {"url": SQLITE_FILE}}, overrides), **kwargs)

    return factory
