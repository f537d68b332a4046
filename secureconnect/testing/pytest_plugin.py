"""pytest fixtures for SecureConnect apps (registered via the ``pytest11`` entry point).

* ``sc_settings`` — a factory: ``sc_settings({"http": {"request_timeout": 1}})``.
* ``sc_app`` — a factory: ``sc_app(overrides, plugins=[my_plugin])`` → ``web.Application``.
* ``sc_client`` — a factory: ``await sc_client(overrides, plugins=[...])`` → test client.
* ``sc_ws`` — a factory: ``await sc_ws(client, token)`` → :class:`WsTester`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ..app import create_app
from .helpers import WsTester, make_settings


@pytest.fixture
def sc_settings(tmp_path: Path) -> Callable[..., Any]:
    def factory(overrides: Mapping[str, Any] | None = None) -> Any:
        return make_settings(overrides, data_dir=str(tmp_path))

    return factory


@pytest.fixture
def sc_app(sc_settings: Callable[..., Any]) -> Callable[..., web.Application]:
    def factory(overrides: Mapping[str, Any] | None = None, *,
                plugins: Iterable[object] = ()) -> web.Application:
        return create_app(sc_settings(overrides), plugins=plugins)

    return factory


@pytest.fixture
def sc_client(
    aiohttp_client: Any, sc_app: Callable[..., web.Application]
) -> Callable[..., Awaitable[Any]]:
    async def factory(overrides: Mapping[str, Any] | None = None, *,
                      plugins: Iterable[object] = ()) -> Any:
        return await aiohttp_client(sc_app(overrides, plugins=plugins))

    return factory


@pytest.fixture
async def sc_ws() -> AsyncIterator[Callable[..., Awaitable[WsTester]]]:
    opened: list[WsTester] = []

    async def factory(client: Any, token: str, path: str = "/v1/ws") -> WsTester:
        ws = await client.ws_connect(path, headers={"Authorization": f"Bearer {token}"})
        tester = WsTester(ws)
        opened.append(tester)
        return tester

    yield factory
    for tester in opened:
        await tester.close()
