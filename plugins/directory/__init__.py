"""Plugin ``directory``: find other users (../shared/API.md "users"; docs/directory.md).

``GET /v1/users/{id}``, ``GET /v1/users?email=`` (exact), ``GET /v1/users?q=``
(co-members by display-name prefix) and ``PATCH /v1/users/me``; off with
``directory = false`` under ``[plugins]``. Chat is optional:
without it the search finds nobody and profiles carry no presence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from secureconnect import Kernel, Route, hookimpl
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

from .models import metadata
from .routes import STATE_KEY, routes
from .service import DirectoryService

MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("directory", metadata, MIGRATIONS)]


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    return list(routes)


async def _directory(kernel: Kernel) -> AsyncIterator[None]:
    kernel.state[STATE_KEY] = DirectoryService(kernel)
    try:
        yield
    finally:
        kernel.state.pop(STATE_KEY, None)


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_directory]


@hookimpl
async def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    service = kernel.state.get(STATE_KEY)
    if isinstance(service, DirectoryService):
        await service.forget(str(user["id"]))


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """The profile box of the web client (static/profile.js; docs/web.md)."""
    return [WebPanel("profile", Path(__file__).parent / "static", scripts=("profile.js",),
                     title="Profile")]
