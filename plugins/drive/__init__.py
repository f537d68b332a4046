"""Plugin ``drive``: files with presigned and resumable uploads on a local directory or
S3, exact per-user quotas, sharing into conversations, and a cleanup job.

Hook implementations only; the logic is in :mod:`.service` (files, quota),
:mod:`.sharing`, :mod:`.tus` and :mod:`.jobs`; storage back ends in :mod:`.storage`.
Needs the ``chat`` plugin (sharing goes through its published interface).
See docs/drive.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from dynaconf import Validator
from sqlalchemy.exc import SQLAlchemyError

from secureconnect import ConfigError, HealthCheck, Job, Kernel, Route, hookimpl
from secureconnect.errors import ServiceUnavailable
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

from . import blob_routes, routes, settings, tus_routes
from .jobs import cleanup_job
from .models import metadata
from .runtime import STATE_KEY, DriveRuntime

log = logging.getLogger(__name__)

REQUIRES = ("chat",)
MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return settings.validators()


def _enabled(kernel: Kernel) -> bool:
    return bool(kernel.settings.drive.enabled)


def _require_chat(kernel: Kernel) -> None:
    if kernel.pm.is_blocked("chat"):
        raise ConfigError(
            "plugin 'drive' needs plugin 'chat' (files are shared into conversations), but "
            "`plugins.chat` is false; enable chat or also set `drive = false` under [plugins]"
        )


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("drive", metadata, MIGRATIONS)]


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    if not _enabled(kernel):
        return []
    _require_chat(kernel)
    max_size = int(kernel.settings.drive.max_file_size)
    out = list(routes.routes) + list(tus_routes.routes)
    # Upload bodies may be as large as a file; they are streamed, never read whole.
    out = [dataclasses.replace(r, max_body=max_size) if r.method == "PATCH" else r for r in out]
    if kernel.settings.drive.backend == "local":
        out += [dataclasses.replace(r, max_body=max_size) if r.method == "PUT" else r
                for r in blob_routes.routes]
    return out


@hookimpl
def sc_health_checks(kernel: Kernel) -> list[HealthCheck]:
    if not _enabled(kernel):
        return []

    async def storage() -> None:
        rt: DriveRuntime = kernel.state[STATE_KEY]
        await rt.drive.storage.ping()

    return [HealthCheck("drive_storage", storage)]


@hookimpl
def sc_jobs(kernel: Kernel) -> list[Job]:
    if not _enabled(kernel):
        return []
    return [cleanup_job(float(kernel.settings.drive.cleanup_interval))]


def _build(kernel: Kernel, s: settings.DriveSettings) -> DriveRuntime:
    from .service import DriveService
    from .sharing import Sharing

    if s.backend == "s3":
        from .storage.s3 import S3Storage, S3Unavailable

        breaker = kernel.breaker("s3", failure_types=(S3Unavailable,))
        drive = DriveService(kernel, s, S3Storage(s, breaker))
        return DriveRuntime(drive, Sharing(drive), None, None)
    from .storage.local import LocalStorage
    from .tus import TusUploads

    local = LocalStorage(s.local_dir, s.public_url, s.url_secret)
    drive = DriveService(kernel, s, local)
    return DriveRuntime(drive, Sharing(drive), local, TusUploads(drive, local))


async def _drive(kernel: Kernel) -> AsyncIterator[None]:
    env = str(kernel.settings.current_env).lower()
    rt = _build(kernel, settings.DriveSettings.from_settings(kernel.settings, env))
    await rt.drive.storage.start()
    kernel.state[STATE_KEY] = rt
    try:
        await rt.drive.sync_bytes_gauge()
    except (ServiceUnavailable, SQLAlchemyError):
        # cosmetic: a database that is down (or not migrated yet) must not stop the app
        log.warning("drive: could not read the stored byte count at start-up")
    try:
        yield
    finally:
        kernel.state.pop(STATE_KEY, None)
        await rt.drive.storage.close()


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """The files UI of the web client (static/drive.js; docs/web.md). Upload and
    download URLs may be on another origin (drive.public_url, the S3 endpoint): the
    pages' CSP lets the panel's scripts reach it."""
    if not _enabled(kernel):
        return []
    d = kernel.settings.drive
    if d.backend == "s3":
        url = str(d.s3_endpoint_url) or "https://*.amazonaws.com"
    else:
        url = str(d.public_url) or str(kernel.settings.app.public_url)
    origin = _origin(url)
    return [WebPanel("drive", Path(__file__).parent / "static", scripts=("drive.js",),
                     styles=("drive.css",), title="Files",
                     connect_src=(origin,) if origin else ())]


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_drive] if _enabled(kernel) else []


@hookimpl
async def sc_participant_removed(
    kernel: Kernel, conversation_id: str, user_id: str, by: str, local: bool
) -> None:
    # Readers' access is checked live against membership; what is left is the sharer's
    # own shares, which leave the conversation with them. SQL is shared: once is enough.
    rt: DriveRuntime | None = kernel.state.get(STATE_KEY)
    if local and rt is not None:
        await rt.sharing.participant_removed(conversation_id, user_id)


@hookimpl
async def sc_conversation_deleted(kernel: Kernel, conversation_id: str, local: bool) -> None:
    rt: DriveRuntime | None = kernel.state.get(STATE_KEY)
    if local and rt is not None:
        await rt.sharing.conversation_deleted(conversation_id)
