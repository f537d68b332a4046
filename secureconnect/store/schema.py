"""Create/upgrade every enabled owner's tables (placeholder: ``create_all``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..kernel import Kernel


async def migrate(kernel: Kernel) -> None:
    sources: list[Any] = [s for _, s in _sources(kernel)]
    async with kernel.db.engine.begin() as conn:
        for source in sources:
            await conn.run_sync(source.metadata.create_all)


def _sources(kernel: Kernel) -> list[tuple[str, object]]:
    from ..app import collect

    return collect(kernel, "sc_migrations")
