"""Plugin ``ai``: conversation summaries and smart replies, opt-in per user.

Hook implementations only; the logic is in :mod:`.service`, the models behind
:mod:`.providers`. Needs the ``chat`` plugin (messages and membership through
``kernel.require(CONVERSATIONS)``). See docs/ai.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dynaconf import Validator

from secureconnect import Job, Kernel, Route, hookimpl
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

from .config import AiSettings, validators
from .models import metadata
from .providers.base import Provider
from .routes import STATE_KEY, routes
from .service import AiService

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
PRUNE_JOB = "ai.prune"
#: summaries read conversations: opened after chat, refused at start-up without it
REQUIRES = ("chat",)


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return validators()


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("ai", metadata, MIGRATIONS)]


def _enabled(kernel: Kernel) -> bool:
    return bool(kernel.settings.ai.enabled)


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    if not _enabled(kernel):
        return []
    return list(routes)


async def _prune(kernel: Kernel) -> int:
    service: AiService = kernel.state[STATE_KEY]
    return await service.prune()


@hookimpl
def sc_jobs(kernel: Kernel) -> list[Job]:
    if not _enabled(kernel):
        return []
    return [Job(PRUNE_JOB, float(kernel.settings.ai.prune_interval), _prune)]


def build_provider(kernel: Kernel, settings: AiSettings) -> Provider:
    if settings.provider == "openai":
        from .providers.openai import OpenAIProvider

        return OpenAIProvider(lambda: kernel.http, kernel.breaker("ai"), settings.openai)
    from .providers.local import LocalProvider

    return LocalProvider(workers=settings.local_workers, points=settings.summary_points,
                         nice=settings.local_nice, executor=settings.local_executor,
                         sched_idle=settings.local_sched_idle,
                         cache_size=settings.local_embedding_cache)


async def _ai_service(kernel: Kernel) -> AsyncIterator[None]:
    settings = AiSettings.from_settings(kernel.settings.ai)
    service = AiService(kernel, settings, build_provider(kernel, settings))
    if settings.local_preload:
        try:
            await service.provider.start()
        except Exception:
            # degrade: the routes answer 503 ai_unavailable with the fix
            log.exception("ai: the %s provider could not start", settings.provider)
    kernel.state[STATE_KEY] = service
    try:
        yield
    finally:
        kernel.state.pop(STATE_KEY, None)
        await service.close()


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_ai_service] if _enabled(kernel) else []


def _service(kernel: Kernel) -> AiService | None:
    found: AiService | None = kernel.state.get(STATE_KEY)
    return found


@hookimpl
async def sc_conversation_deleted(kernel: Kernel, conversation_id: str, local: bool) -> None:
    service = _service(kernel)
    if service is not None and local:
        await service.store.forget_conversation(conversation_id)


@hookimpl
async def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    service = _service(kernel)
    if service is not None and user.get("id") is not None:
        await service.store.forget_user(str(user["id"]))


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """The AI UI of the web client: opt-in switch, summaries, reply chips
    (static/ai.js; docs/web.md)."""
    if not _enabled(kernel):
        return []
    return [WebPanel("ai", Path(__file__).parent / "static", scripts=("ai.js",),
                     styles=("ai.css",), title="AI assistant")]
