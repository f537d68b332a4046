"""Alembic migrations from an empty database, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import inspect

from secureconnect.app import KERNEL, create_app
from secureconnect.kernel import Kernel
from secureconnect.store.schema import drift, migrate, status
from secureconnect.testing.helpers import make_settings
from tests.kernel.test_cli import run_cli

OWNERS = {"auth", "chat", "polls", "video", "drive", "push", "ai", "directory"}


@asynccontextmanager
async def running(url: str, **overrides: Any) -> AsyncIterator[Kernel]:
    """The app's resources open (no HTTP), without auto-migration."""
    settings = make_settings({"database": {"url": url, "auto_migrate": False}, **overrides})
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    try:
        yield runner.app[KERNEL]
    finally:
        await runner.cleanup()


async def tables(kernel: Kernel) -> set[str]:
    async with kernel.db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/migrate.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_migrate_from_empty_matches_the_models(empty_database: str) -> None:
    async with running(empty_database) as kernel:
        assert await tables(kernel) == set()
        applied = await migrate(kernel)
        assert {line.split(":")[0] for line in applied} == OWNERS
        assert any(line.startswith("chat: chat_0001") for line in applied)
        # Every owner has its own version table and sits at its head.
        for owner, state in (await status(kernel)).items():
            assert state["current"] == state["head"] != [], owner
        assert {f"alembic_version_{o}" for o in OWNERS} <= await tables(kernel)
        # The revisions create exactly what the models declare (types, indexes, keys).
        assert await drift(kernel) == {owner: [] for owner in OWNERS}
        # Upgrading again is a no-op.
        assert await migrate(kernel) == []


async def test_enabling_a_plugin_later_migrates_only_that_plugin(tmp_path: Any) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/later.db"
    async with running(url, plugins={"polls": False, "video": False}) as kernel:
        applied = await migrate(kernel)
        assert {line.split(":")[0] for line in applied} == OWNERS - {"polls", "video"}
        assert "polls" not in await tables(kernel)
    async with running(url, plugins={"video": False}) as kernel:
        applied = await migrate(kernel)
        assert [line.split(":")[0] for line in applied] == ["polls"]
        assert "polls" in await tables(kernel)


async def test_auto_migrate_on_start_serves_at_once(
        sc_client: Callable[..., Any], tmp_path: Any) -> None:
    client = await sc_client({"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/auto.db",
                                           "auto_migrate": True}})
    r = await client.post("/v1/auth/register", json={
        "email": "mig@example.com", "password": "correct horse battery", "display_name": "M"})
    assert r.status == 201, await r.text()


def test_migrate_command_upgrades_then_reports_up_to_date(tmp_path: Any) -> None:
    env = {"SECURECONNECT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
           "SECURECONNECT_DATABASE__AUTO_MIGRATE": "false"}
    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "auth: auth_0001" in first.stdout and "polls: polls_0001" in first.stdout
    second = run_cli("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema is up to date"
