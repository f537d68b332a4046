"""Plugin ``push``: push notifications (FCM, APNs, Web Push, webhook gateways, log) for
offline conversation members, through a durable outbox.

Hook implementations only; the logic is in :mod:`.service` (who gets what),
:mod:`.outbox` (SQL) and :mod:`.dispatcher` (workers). Observes chat through its hooks
and interface (``REQUIRES = ("chat",)``). See docs/push.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from dynaconf import Validator

from secureconnect import ConfigError, Kernel, Route, hookimpl
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

from .dispatcher import Dispatcher
from .metrics import PushMetrics
from .models import metadata
from .outbox import Outbox
from .providers.base import Provider
from .routes import STATE_KEY, routes
from .service import PushService
from .settings import PushSettings, validators

log = logging.getLogger(__name__)

REQUIRES = ("chat",)
MIGRATIONS = Path(__file__).parent / "migrations"


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return validators()


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("push", metadata, MIGRATIONS)]


def _enabled(kernel: Kernel) -> bool:
    return bool(kernel.settings.push.enabled)


@hookimpl
def sc_routes(kernel: Kernel) -> list[Route]:
    if not _enabled(kernel):
        return []
    if kernel.pm.is_blocked("chat"):
        raise ConfigError(
            "plugin 'push' needs plugin 'chat' (it notifies conversation members), but "
            "`plugins.chat` is false; enable chat or also set `push = false` under [plugins]")
    check_providers(PushSettings.from_settings(kernel.settings.push))
    from . import web_routes

    # the VAPID key always; the dead-letter admin routes with the admin console
    extra = [r for r in web_routes.routes
             if not r.path.startswith("/v1/admin/") or _admin_console(kernel)]
    return [*routes, *extra]


def _admin_console(kernel: Kernel) -> bool:
    web_settings = kernel.settings.get("web") or {}
    return not kernel.pm.is_blocked("web") and bool(web_settings.get("admin", True))


def check_providers(s: PushSettings) -> None:
    """Refuse a provider that is enabled but not configured (at ``create_app``, before
    any resource is open)."""
    for name in s.providers:
        if name == "fcm":
            _fcm_account(s)
        elif name == "webpush":
            from .providers.webpush import WebPushProvider

            WebPushProvider.config(s)
        elif name == "apns":
            from .providers.apns import ApnsProvider

            ApnsProvider.config(s)


def _fcm_account(s: PushSettings) -> dict[str, Any]:
    from .providers.fcm import FcmConfigError, load_service_account

    try:
        return load_service_account(str(s.fcm.get("credentials_json", "")),
                                    str(s.fcm.get("credentials_file", "")))
    except (FcmConfigError, OSError, ValueError) as exc:
        raise ConfigError(f"plugin 'push': {exc}") from None


def build_providers(kernel: Kernel, s: PushSettings) -> dict[str, Provider]:
    """One provider per enabled name; misconfiguration is a start-up error."""
    from .providers.log import LogProvider

    out: dict[str, Provider] = {"log": LogProvider()}
    for name in s.providers:
        if name == "webhook":
            from .providers.webhook import WebhookProvider

            out[name] = WebhookProvider(kernel, s.webhook_allowed_hosts, s.send_timeout)
        elif name == "fcm":
            from .providers.fcm import FcmProvider

            out[name] = FcmProvider(kernel, _fcm_account(s), str(s.fcm["endpoint"]),
                                    s.send_timeout)
        elif name == "webpush":
            from .providers.webpush import WebPushProvider

            out[name] = WebPushProvider.from_settings(kernel, s)
        elif name == "apns":
            from .providers.apns import ApnsProvider

            out[name] = ApnsProvider.from_settings(s)
    return out


async def _push_service(kernel: Kernel) -> AsyncIterator[None]:
    settings = PushSettings.from_settings(kernel.settings.push)
    metrics = PushMetrics.build(kernel.metrics)
    outbox = Outbox(kernel, lease=settings.lease, ttl=settings.ttl)
    dispatcher = Dispatcher(kernel, settings, outbox, build_providers(kernel, settings),
                            metrics)
    service = PushService(kernel, settings, outbox, dispatcher, metrics)
    kernel.state[STATE_KEY] = service
    service.start()
    if settings.deliver:  # else only enqueue: instances with `deliver = true` send
        dispatcher.start()
    try:
        yield
    finally:
        await service.close()
        await dispatcher.close()
        kernel.state.pop(STATE_KEY, None)


# REQUIRES = ("chat",): opened after chat's context, closed before it.
@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_push_service] if _enabled(kernel) else []


def _service(kernel: Kernel) -> PushService | None:
    found: PushService | None = kernel.state.get(STATE_KEY)
    return found


@hookimpl
def sc_message_sent(kernel: Kernel, message: dict[str, Any]) -> None:
    service = _service(kernel)
    if service is not None:
        service.message_sent(message)


# optionalhook: video's hook exists only while the video plugin is enabled
@hookimpl(optionalhook=True)
def sc_call_ringing(kernel: Kernel, call: dict[str, Any], callee_ids: list[str]) -> None:
    service = _service(kernel)
    if service is not None:
        service.call_ringing(call, callee_ids)


@hookimpl
async def sc_conversation_deleted(kernel: Kernel, conversation_id: str, local: bool) -> None:
    service = _service(kernel)
    if service is not None and local:
        await service.forget_conversation(conversation_id)


@hookimpl
async def sc_participant_removed(kernel: Kernel, conversation_id: str, user_id: str,
                                 by: str, local: bool) -> None:
    service = _service(kernel)
    if service is not None and local:
        await service.forget_member(conversation_id, user_id)


@hookimpl
def sc_cli_commands() -> list[object]:
    from .cli import COMMANDS

    return list(COMMANDS)


@hookimpl
async def sc_sessions_revoked(kernel: Kernel, user_id: str | None, session_ids: list[str],
                              reason: str) -> None:
    service = _service(kernel)
    if service is not None and service.settings.remove_devices_with_session:
        removed = await service.remove_session_devices(session_ids)
        if removed:
            log.info("push: %d device(s) removed with their revoked session (%s)",
                     removed, reason)


@hookimpl
async def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    service = _service(kernel)
    if service is not None:
        await service.forget_user(str(user["id"]))


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    """Web Push for the web client (static/push.js and its service worker sw.js) and
    the admin console's dead letters (docs/web.md)."""
    if not _enabled(kernel):
        return []
    return [WebPanel("push", Path(__file__).parent / "static", scripts=("push.js",),
                     styles=(), title="Notifications")]
