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
from secureconnect_plugins.chat.api import CONVERSATIONS

from secureconnect import ConfigError, Job, Kernel, Route, hookimpl
from secureconnect.migrations import MigrationSource

from .config import AiSettings, validators
from .models import metadata
from .providers.base import Provider
from .routes import STATE_KEY, routes
from .service import AiService

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
PRUNE_JOB = "ai.prune"
#: start-up ordering: this plugin's contexts open after chat's
REQUIRES = ("chat",)


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return validators()


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("ai", metadata, MIGRATIONS)]


def _enabled(kernel: Kernel) -> bool:
    return bool(kernel.settings.ai.enabled)


def _require_chat(kernel: Kernel) -> None:
    if kernel.pm.is_blocked("chat"):
        raise ConfigError(
            "plugin 'ai' needs plugin 'chat' (it summarises conversations), but "
            "`plugins.chat` is false; enable chat or also set `ai = false` under [plugins]"
        )


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    if not _enabled(kernel):
        return []
    _require_chat(kernel)
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

    return LocalProvider(threads=settings.local_threads, points=settings.summary_points,
                         nice=settings.local_nice)


async def _ai_service(kernel: Kernel) -> AsyncIterator[None]:
    if not kernel.provides(CONVERSATIONS):
        raise ConfigError(
            f"plugin 'ai' needs the {CONVERSATIONS!r} interface of plugin 'chat', which is "
            "not installed or not enabled; enable chat or set `ai = false` under [plugins]"
        )
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


# trylast: opened after chat's context, so chat's interface is already provided.
@hookimpl(trylast=True)
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_ai_service] if _enabled(kernel) else []


def _service(kernel: Kernel) -> AiService | None:
    found: AiService | None = kernel.state.get(STATE_KEY)
    return found


# optionalhook: chat's hookspecs are added to the manager by chat (being landed on main)
@hookimpl(optionalhook=True)
async def sc_conversation_deleted(kernel: Kernel, conversation_id: str, local: bool) -> None:
    service = _service(kernel)
    if service is not None and local:
        await service.store.forget_conversation(conversation_id)


@hookimpl
async def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    service = _service(kernel)
    if service is not None and user.get("id") is not None:
        await service.store.forget_user(str(user["id"]))
