"""Plugin ``video``: group voice/video calls — lifecycle, WebRTC signaling relay, TURN
credentials, reconnect grace and a stale-call reaper. Media flows peer to peer (or
through an external SFU/TURN); SecureConnect carries the signaling and owns the state.

Hook implementations only; the logic is in :mod:`.service` (state machine),
:mod:`.signaling` (WebSocket relay), :mod:`.presence` (sockets and grace),
:mod:`.jobs` (reaper), :mod:`.ice` (ICE servers). Needs chat, through
``kernel.require(CONVERSATIONS)`` only. Offers the hook ``sc_call_ringing``
(:mod:`.hookspecs`). See docs/video.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from dynaconf import Validator
from sqlalchemy.exc import SQLAlchemyError

from secureconnect import Job, Kernel, Route, hookimpl
from secureconnect.errors import ServiceUnavailable
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

from . import hookspecs
from .jobs import STATE_KEY, reap_job
from .models import metadata
from .presence import Presence
from .routes import routes
from .service import CallService
from .settings import VideoSettings, validators
from .signaling import handlers

if TYPE_CHECKING:
    from secureconnect.ws.gateway import Connection, WsHandler

log = logging.getLogger(__name__)

#: calls live in conversations: opened after chat, refused at start-up without it
REQUIRES = ("chat",)
MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class VideoState:
    service: CallService
    presence: Presence


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return validators()


def _enabled(kernel: Kernel) -> bool:
    return bool(kernel.settings.video.enabled)


@hookimpl
def sc_addhooks(pm: pluggy.PluginManager) -> None:
    """Declare ``sc_call_ringing`` for other plugins (push) to implement."""
    pm.add_hookspecs(hookspecs)


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("video", metadata, MIGRATIONS)]


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    if not _enabled(kernel):
        return []
    VideoSettings.from_settings(kernel.settings.video)  # cross-key checks, at build time
    return list(routes)


@hookimpl
def sc_ws_handlers(kernel: Kernel) -> Mapping[str, WsHandler]:
    return handlers(kernel) if _enabled(kernel) else {}


@hookimpl
def sc_jobs(kernel: Kernel) -> list[Job]:
    if not _enabled(kernel):
        return []
    return [reap_job(float(kernel.settings.video.reaper_interval))]


def _state(kernel: Kernel) -> VideoState | None:
    state: VideoState | None = kernel.state.get(STATE_KEY)
    return state


@hookimpl
async def sc_ws_connected(kernel: Kernel, conn: Connection) -> None:
    state = _state(kernel)
    if state is not None:
        await state.presence.connected(conn.user_id)


@hookimpl
async def sc_ws_disconnected(kernel: Kernel, conn: Connection) -> None:
    state = _state(kernel)
    if state is not None:
        await state.presence.disconnected(conn.user_id)


@hookimpl
async def sc_participant_removed(
    kernel: Kernel, conversation_id: str, user_id: str, by: str, local: bool
) -> None:
    # Durable work where the change was made; every instance's relay checks read the
    # shared tables, so the removed user is cut off everywhere at once.
    state = _state(kernel)
    if state is not None and local:
        await state.service.participant_removed(str(conversation_id), str(user_id))


@hookimpl
async def sc_conversation_deleted(kernel: Kernel, conversation_id: str, local: bool) -> None:
    state = _state(kernel)
    if state is not None and local:
        await state.service.conversation_deleted(str(conversation_id))


async def _video_service(kernel: Kernel) -> AsyncIterator[None]:
    service = CallService(kernel, VideoSettings.from_settings(kernel.settings.video))
    presence = Presence(service)
    await service.start()
    kernel.state[STATE_KEY] = VideoState(service, presence)
    try:
        await service.sync_active_gauge()
    except (ServiceUnavailable, SQLAlchemyError):
        log.warning("video: could not read the live call count at start-up")
    presence.start()
    try:
        yield
    finally:
        kernel.state.pop(STATE_KEY, None)
        await presence.close()
        await service.close()


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[Any]:
    return [_video_service] if _enabled(kernel) else []


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """The calls UI of the web client (static/calls.js; docs/web.md)."""
    if not _enabled(kernel):
        return []
    return [WebPanel("calls", Path(__file__).parent / "static", scripts=("calls.js",),
                     styles=("calls.css",), title="Calls")]
