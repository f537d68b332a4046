"""Schema migrations with Alembic: one independent history per owner.

Every enabled owner (the kernel's ``auth`` tables and each plugin) declares a
:class:`~secureconnect.migrations.MigrationSource` through ``sc_migrations``: a name and
a folder of Alembic revision files. Each owner keeps its own version table
(``alembic_version_<name>``), so enabling, disabling or upgrading one plugin never
touches another's history, and a third-party plugin ships its revisions the same way
the built-in ones do. No ``alembic.ini`` or ``env.py`` is involved: the runner builds
Alembic's script directory and migration context in code, on the app's own engine.

``secureconnect migrate`` upgrades every enabled owner to its head; the embedded default
does it at start-up (``database.auto_migrate``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from ..errors import ConfigError
from ..migrations import MigrationSource

if TYPE_CHECKING:
    from ..kernel import Kernel

log = logging.getLogger(__name__)


def version_table(source: MigrationSource) -> str:
    return f"alembic_version_{source.name}"


def _script(source: MigrationSource) -> ScriptDirectory:
    if not source.versions.is_dir():
        raise ConfigError(
            f"migrations of {source.name!r}: folder {source.versions} does not exist; "
            "create it with the owner's Alembic revision files"
        )
    folder = str(source.versions)
    return ScriptDirectory(folder, version_locations=[folder])


def _context(conn: Connection, source: MigrationSource, **opts: Any) -> MigrationContext:
    return MigrationContext.configure(
        conn,
        opts={"version_table": version_table(source), "target_metadata": source.metadata,
              **opts},
    )


def _upgrade_one(conn: Connection, source: MigrationSource) -> list[str]:
    """Upgrade ``source`` to its head inside the caller's transaction."""
    script = _script(source)
    heads = script.get_heads()
    if len(heads) > 1:
        raise ConfigError(
            f"migrations of {source.name!r} have several heads {sorted(heads)}; "
            "merge them into one revision"
        )
    def upgrade(rev: Any, _ctx: Any) -> Any:
        return script._upgrade_revs("heads", rev)

    context = _context(conn, source, fn=upgrade)
    current = context.get_current_heads()
    applied: list[str] = []
    for step in reversed(list(script.iterate_revisions("heads", current or "base"))):
        applied.append(f"{source.name}: {step.revision} {step.doc}".rstrip())
    if applied:
        # ``op.*`` in the revision files proxies to this context's Operations.
        with Operations.context(context), context.begin_transaction():
            context.run_migrations()
    return applied


def _current(conn: Connection, source: MigrationSource) -> tuple[tuple[str, ...], tuple[str, ...]]:
    script = _script(source)
    return _context(conn, source).get_current_heads(), tuple(script.get_heads())


def _drift(conn: Connection, source: MigrationSource) -> list[Any]:
    """Differences between the migrated schema and the owner's ``MetaData``."""
    context = _context(conn, source, compare_type=True)
    ours = set(source.metadata.tables)
    diffs = compare_metadata(context, source.metadata)
    # Other owners' tables show up as "remove_table"; only this owner's tables count.
    return [d for d in diffs if not _is_foreign(d, ours)]


def _is_foreign(diff: Any, ours: set[str]) -> bool:
    first = diff[0] if isinstance(diff, list) else diff
    if first[0] == "remove_table":
        return first[1].name not in ours
    if first[0] == "remove_index":
        return first[1].table.name not in ours
    return False


def sources(kernel: Kernel) -> list[MigrationSource]:
    from ..hooks import collect

    found = [s for _, s in collect(kernel, "sc_migrations")]
    names = [s.name for s in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"several plugins declare migrations named {duplicates}")
    return found


async def migrate(kernel: Kernel, *, external: bool = True) -> list[str]:
    """Upgrade every enabled owner to its head; returns one line per applied revision.

    With ``external`` the ``sc_migrate`` hook then upgrades schemas outside SQL (the
    start-up auto-migration runs before plugins open those stores, so they migrate
    their own when they open)."""
    applied: list[str] = []
    for source in sources(kernel):
        async with kernel.db.engine.begin() as conn:
            lines = await conn.run_sync(_upgrade_one, source)
        for line in lines:
            log.info("migrated %s", line)
        applied.extend(lines)
    if external:
        for lines in await kernel.call("sc_migrate"):
            applied.extend(lines or ())
    return applied


async def status(kernel: Kernel) -> dict[str, dict[str, list[str]]]:
    """``{owner: {"current": [...], "head": [...]}}`` for every enabled owner."""
    result: dict[str, dict[str, list[str]]] = {}
    for source in sources(kernel):
        async with kernel.db.engine.connect() as conn:
            current, head = await conn.run_sync(_current, source)
        result[source.name] = {"current": sorted(current), "head": sorted(head)}
    return result


async def drift(kernel: Kernel) -> dict[str, list[Any]]:
    """Schema differences per owner after migrating (empty lists mean none)."""
    result: dict[str, list[Any]] = {}
    for source in sources(kernel):
        async with kernel.db.engine.connect() as conn:
            result[source.name] = await conn.run_sync(_drift, source)
    return result
