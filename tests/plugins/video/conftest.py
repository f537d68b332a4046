"""Fixtures for the video black-box tests: a real app (auth, gateway, chat, video) on a
file SQLite database."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from .helpers import FAST, SQLITE_FILE, merge


@pytest.fixture
def video_client(sc_client: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``await video_client(overrides)`` → a test client with fast call timers."""

    async def factory(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        settings = merge(merge({"database": {"url": SQLITE_FILE}}, FAST), overrides)
        return await sc_client(settings, **kwargs)

    return factory
