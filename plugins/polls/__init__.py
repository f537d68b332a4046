"""Plugin ``polls``: polls inside conversations, voted on live over WebSocket.

Hook implementations only; the logic is in :mod:`.service`. Requires the ``chat``
plugin (membership and the timeline through chat's published interface, ``chat.api``).
See docs/polls.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

from dynaconf import Validator
from sqlalchemy.exc import SQLAlchemyError

from secureconnect import Job, Kernel, Route, hookimpl
from secureconnect.errors import ServiceUnavailable
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

from .domain import PollSettings
from .jobs import expire_job
from .models import metadata
from .routes import STATE_KEY, routes
from .service import PollService

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
#: polls live in conversations: opened after chat, refused at start-up without it
REQUIRES = ("chat",)


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("polls.enabled", is_type_of=bool),
        Validator("polls.max_options", is_type_of=int, gte=2, lte=50),
        Validator("polls.max_question_length", is_type_of=int, gte=1, lte=4000),
        Validator("polls.max_option_length", is_type_of=int, gte=1, lte=1000),
        Validator("polls.default_results_visibility", is_in=("always", "after_close")),
        Validator("polls.max_duration_days", is_type_of=(int, float), gt=0, lte=3650),
        Validator("polls.expire_interval", is_type_of=(int, float), gte=1, lte=86400),
        Validator("polls.expire_batch_size", is_type_of=int, gte=1, lte=100000),
    ]


def _enabled(kernel: Kernel) -> bool:
    return bool(kernel.settings.polls.enabled)


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("polls", metadata, MIGRATIONS)]


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    if not _enabled(kernel):
        return []
    return list(routes)


@hookimpl
def sc_jobs(kernel: Kernel) -> list[Job]:
    if not _enabled(kernel):
        return []
    return [expire_job(float(kernel.settings.polls.expire_interval))]


async def _poll_service(kernel: Kernel) -> AsyncIterator[None]:
    service = PollService(kernel, PollSettings.from_settings(kernel.settings.polls))
    kernel.state[STATE_KEY] = service
    try:
        await service.sync_active_gauge()
    except (ServiceUnavailable, SQLAlchemyError):
        # The gauge is cosmetic: a database that is down (or not migrated yet, when
        # `secureconnect migrate` itself is starting) must not stop the app.
        log.warning("polls: could not read the active poll count at start-up")
    try:
        yield
    finally:
        kernel.state.pop(STATE_KEY, None)


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_poll_service] if _enabled(kernel) else []


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """The polls UI of the web client (static/polls.js; docs/web.md)."""
    if not _enabled(kernel):
        return []
    return [WebPanel("polls", Path(__file__).parent / "static", scripts=("polls.js",),
                     styles=("polls.css",), title="Polls")]
