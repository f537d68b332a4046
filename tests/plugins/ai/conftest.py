"""Fixtures for the ai tests: a real app (auth, chat, ai) on a file SQLite database, and
a fake OpenAI-compatible provider served over real HTTP by the test."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from .fake_openai import FakeOpenAI
from .helpers import SQLITE_FILE, merge


@pytest.fixture
def ai_client(sc_client: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``await ai_client(overrides)`` → a test client on a fresh file database.

    The local model computes on a thread at normal priority here: spawning a worker
    process per app (the production default) and loading the model at nice 10 takes
    seconds on a loaded machine. The tests that exercise the process pool ask for it
    (``{"ai": {"local_executor": "process"}}``)."""

    async def factory(overrides: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        base = {"database": {"url": SQLITE_FILE},
                "ai": {"local_executor": "thread", "local_nice": 0}}
        settings = merge(base, overrides)
        return await sc_client(settings, **kwargs)

    return factory


@pytest.fixture
async def fake_openai(aiohttp_server: Any) -> FakeOpenAI:
    fake = FakeOpenAI()
    fake.server = await aiohttp_server(fake.app())
    return fake
