"""The ``[push]`` settings, read once at start-up into typed values.

Provider credentials are secrets (``config/.secrets.toml`` or ``SECURECONNECT_PUSH__...``
environment variables), never in ``settings.toml``; see docs/push.md "Settings".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dynaconf import Validator

PLATFORMS = ("fcm", "apns", "webpush", "webhook")
PROVIDERS = ("log", *PLATFORMS)
Preview = Literal["none", "content"]


def validators() -> list[Validator]:
    positive = {"is_type_of": (int, float), "gt": 0}
    return [
        Validator("push.enabled", is_type_of=bool),
        Validator("push.deliver", is_type_of=bool),
        Validator("push.providers", is_type_of=list,
                  condition=lambda v: all(p in PROVIDERS for p in v),
                  messages={"condition": f"push.providers: each must be one of {PROVIDERS}"}),
        Validator("push.preview", is_in=("none", "content")),
        Validator("push.preview_max_chars", is_type_of=int, gte=0, lte=1000),
        Validator("push.remove_devices_with_session", is_type_of=bool),
        Validator("push.max_devices_per_user", is_type_of=int, gte=1, lte=1000),
        Validator("push.max_outbox", is_type_of=int, gte=1, lte=100_000_000),
        Validator("push.enqueue_queue", is_type_of=int, gte=1, lte=1_000_000),
        Validator("push.max_recipients", is_type_of=int, gte=1, lte=1_000_000),
        Validator("push.poll_interval", gte=0.01, lte=60, **positive),
        Validator("push.batch_size", is_type_of=int, gte=1, lte=10_000),
        Validator("push.lease", gte=1, lte=3600, **positive),
        Validator("push.concurrency", is_type_of=int, gte=1, lte=1000),
        Validator("push.yield_backlog", is_type_of=int, gte=0, lte=100_000_000),
        Validator("push.max_attempts", is_type_of=int, gte=1, lte=100),
        Validator("push.max_age", gte=1, lte=30 * 86400, **positive),
        Validator("push.backoff_base", gte=0.01, lte=3600, **positive),
        Validator("push.backoff_max", gte=0.01, lte=86400, **positive),
        Validator("push.retry_after_max", gte=1, lte=86400, **positive),
        Validator("push.send_timeout", gte=0.1, lte=300, **positive),
        Validator("push.breaker_threshold", is_type_of=int, gte=1, lte=1000),
        Validator("push.breaker_reset", gte=0.1, lte=3600, **positive),
        Validator("push.ttl", is_type_of=int, gte=0, lte=28 * 86400),
        Validator("push.webhook_allowed_hosts", is_type_of=list),
        Validator("push.fcm.endpoint", is_type_of=str, startswith="http"),
        Validator("push.fcm.credentials_json", is_type_of=str),
        Validator("push.fcm.credentials_file", is_type_of=str),
        Validator("push.webpush.vapid_private_key", is_type_of=str),
        Validator("push.webpush.vapid_subject", is_type_of=str,
                  condition=lambda v: v == "" or v.startswith(("mailto:", "https:")),
                  messages={"condition": "push.webpush.vapid_subject must be a mailto: or "
                                         "https: URL (RFC 8292), got {value}"}),
        Validator("push.webpush.allowed_hosts", is_type_of=list),
        Validator("push.apns.endpoint", is_type_of=str, startswith="http"),
        Validator("push.apns.key_id", is_type_of=str),
        Validator("push.apns.team_id", is_type_of=str),
        Validator("push.apns.topic", is_type_of=str),
        Validator("push.apns.private_key", is_type_of=str),
        Validator("push.apns.token_lifetime", gte=1200, lte=3600, **positive),
    ]


@dataclass(frozen=True)
class PushSettings:
    providers: tuple[str, ...] = ("log",)
    deliver: bool = True
    preview: Preview = "none"
    preview_max_chars: int = 120
    remove_devices_with_session: bool = True
    max_devices_per_user: int = 20
    max_outbox: int = 100_000
    enqueue_queue: int = 10_000
    max_recipients: int = 10_000
    poll_interval: float = 1.0
    batch_size: int = 100
    lease: float = 60.0
    concurrency: int = 8
    yield_backlog: int = 5000
    max_attempts: int = 8
    max_age: float = 86_400.0
    backoff_base: float = 2.0
    backoff_max: float = 600.0
    retry_after_max: float = 3600.0
    send_timeout: float = 15.0
    breaker_threshold: int = 5
    breaker_reset: float = 30.0
    ttl: int = 86_400
    webhook_allowed_hosts: tuple[str, ...] = ()
    fcm: dict[str, Any] = field(default_factory=dict)
    webpush: dict[str, Any] = field(default_factory=dict)
    apns: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, t: Any) -> PushSettings:
        def table(name: str) -> dict[str, Any]:
            raw = t.get(name) or {}
            return {str(k).lower(): v for k, v in dict(raw).items()}

        return cls(
            providers=tuple(t.providers),
            deliver=bool(t.get("deliver", True)),
            preview=t.preview,
            preview_max_chars=int(t.preview_max_chars),
            remove_devices_with_session=bool(t.remove_devices_with_session),
            max_devices_per_user=int(t.max_devices_per_user),
            max_outbox=int(t.max_outbox),
            enqueue_queue=int(t.enqueue_queue),
            max_recipients=int(t.max_recipients),
            poll_interval=float(t.poll_interval),
            batch_size=int(t.batch_size),
            lease=float(t.lease),
            concurrency=int(t.concurrency),
            yield_backlog=int(t.get("yield_backlog", 5000)),
            max_attempts=int(t.max_attempts),
            max_age=float(t.max_age),
            backoff_base=float(t.backoff_base),
            backoff_max=float(t.backoff_max),
            retry_after_max=float(t.retry_after_max),
            send_timeout=float(t.send_timeout),
            breaker_threshold=int(t.breaker_threshold),
            breaker_reset=float(t.breaker_reset),
            ttl=int(t.ttl),
            webhook_allowed_hosts=tuple(str(h).lower() for h in t.webhook_allowed_hosts),
            fcm=table("fcm"),
            webpush=table("webpush"),
            apns=table("apns"),
        )

    def provider_for(self, platform: str) -> str:
        """The provider that delivers a device of ``platform``: its own when enabled,
        else ``log`` (records what would have been sent)."""
        return platform if platform in self.providers else "log"
