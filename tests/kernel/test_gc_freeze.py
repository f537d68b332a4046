"""A serving process keeps what start-up built out of the cyclic collector's scans."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

from aiohttp import web

from secureconnect.app import freeze_after_startup


class Pool:
    """Stands for what a plugin's cleanup context builds (pools, caches)."""


async def test_objects_built_at_startup_are_frozen_and_later_ones_are_not(aiohttp_client):
    built: list[Pool] = []

    async def context(app: web.Application) -> AsyncIterator[None]:
        built.append(Pool())
        yield

    app = web.Application()
    app.cleanup_ctx.append(context)
    freeze_after_startup(app)
    assert gc.get_freeze_count() == 0
    try:
        await aiohttp_client(app)
        later = Pool()
        tracked = {id(o) for o in gc.get_objects()}  # (the permanent generation is not)
        assert gc.get_freeze_count() > 0
        assert id(built[0]) not in tracked
        assert id(later) in tracked
    finally:
        gc.unfreeze()  # a test process builds many apps: give everything back
