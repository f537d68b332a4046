"""Kernel plugin ``auth``: accounts, sessions, tokens, email tokens and rate limits.

The services themselves (:class:`secureconnect.auth.service.AuthService` as
``kernel.auth``, :class:`secureconnect.auth.ratelimit.RateLimits` as
``kernel.rate_limits``) are built with the kernel; this plugin declares their settings
and contributes their routes, tables, cleanup job and resources. See docs/auth.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from dynaconf import Validator

from .. import hookimpl
from ..auth.jobs import cleanup_job
from ..auth.models import migration_source
from ..auth.ratelimit import STRATEGIES, parse_limits
from ..auth.routes import routes
from ..auth.tokens import ALGORITHMS
from ..jobs import Job
from ..kernel import Kernel
from ..migrations import MigrationSource
from ..routing import Route


def _valid_classes(table: Any) -> bool:
    """Every class is a table of ``per_ip`` / ``per_user`` limit strings."""
    if not isinstance(table, dict) or "default" not in {str(k) for k in table}:
        return False
    for spec in table.values():
        if not isinstance(spec, dict) or set(map(str, spec)) - {"per_ip", "per_user"}:
            return False
        for value in spec.values():
            try:
                parse_limits(str(value))
            except ValueError:
                return False
    return True


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{token}" in value


@hookimpl(trylast=True)
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("auth.jwt_algorithm", is_in=ALGORITHMS),
        Validator("auth.jwt_secret", is_type_of=str),
        Validator("auth.jwt_private_key_file", is_type_of=str),
        Validator("auth.jwt_kid", is_type_of=str, len_min=1, len_max=64),
        Validator("auth.jwt_previous_secrets", is_type_of=list),
        Validator("auth.jwt_issuer", is_type_of=str, len_min=1),
        Validator("auth.jwt_audience", is_type_of=str, len_min=1),
        Validator("auth.jwt_leeway", is_type_of=(int, float), gte=0, lte=300),
        Validator("auth.access_token_ttl", is_type_of=int, gte=30, lte=86400),
        Validator("auth.refresh_token_ttl", is_type_of=int, gte=300, lte=31_536_000),
        Validator("auth.session_cache_ttl", is_type_of=(int, float), gt=0, lte=3600),
        Validator("auth.password_min_length", is_type_of=int, gte=8, lte=128),
        Validator("auth.password_max_length", is_type_of=int, gte=16, lte=4096),
        Validator("auth.display_name_max_length", is_type_of=int, gte=1, lte=200),
        Validator("auth.argon2_time_cost", is_type_of=int, gte=1, lte=20),
        Validator("auth.argon2_memory_cost", is_type_of=int, gte=8, lte=4 * 1024 * 1024),
        Validator("auth.argon2_parallelism", is_type_of=int, gte=1, lte=16),
        Validator("auth.hash_workers", is_type_of=int, gte=1, lte=64),
        Validator("auth.hash_max_pending", is_type_of=int, gte=1, lte=10000),
        Validator("auth.email_verification_ttl", is_type_of=int, gte=60, lte=30 * 86400),
        Validator("auth.password_reset_ttl", is_type_of=int, gte=60, lte=7 * 86400),
        Validator(
            "auth.verify_email_url",
            condition=_templated,
            messages={"condition": "{name} must contain {{token}}"},
        ),
        Validator(
            "auth.password_reset_url",
            condition=_templated,
            messages={"condition": "{name} must contain {{token}}"},
        ),
        Validator("auth.cleanup_interval", is_type_of=(int, float), gte=10, lte=7 * 86400),
        Validator("auth.mail_backend", is_in=("outbox", "smtp")),
        Validator("auth.mail_from", is_type_of=str, len_min=3),
        Validator("auth.mail_max_pending", is_type_of=int, gte=1, lte=100000),
        Validator("auth.outbox_size", is_type_of=int, gte=1, lte=100000),
        Validator("auth.smtp_host", is_type_of=str),
        Validator("auth.smtp_port", is_type_of=int, gte=1, lte=65535),
        Validator("auth.smtp_username", is_type_of=str),
        Validator("auth.smtp_password", is_type_of=str),
        Validator("auth.smtp_tls", is_in=("starttls", "tls", "none")),
        Validator("auth.smtp_timeout", is_type_of=(int, float), gt=0, lte=120),
        Validator("auth.smtp_host", len_min=1, when=Validator("auth.mail_backend", eq="smtp")),
        Validator("rate_limits.enabled", is_type_of=bool),
        Validator("rate_limits.strategy", is_in=tuple(STRATEGIES)),
        Validator("rate_limits.trust_forwarded_for", is_type_of=bool),
        Validator("rate_limits.redis_retry_interval", is_type_of=(int, float), gt=0, lte=300),
        Validator(
            "rate_limits.classes",
            condition=_valid_classes,
            messages={
                "condition": "{name} must hold a `default` class and only tables of "
                'per_ip/per_user limits like "10/minute;100/hour"'
            },
        ),
    ]


@hookimpl(trylast=True)
def sc_routes(kernel: Kernel) -> list[Route]:
    return list(routes)


@hookimpl(trylast=True)
def sc_migrations() -> list[MigrationSource]:
    return [migration_source()]


@hookimpl(trylast=True)
def sc_jobs(kernel: Kernel) -> list[Job]:
    return [cleanup_job(kernel)]


async def _auth(kernel: Kernel) -> AsyncIterator[None]:
    await kernel.auth.start()
    try:
        yield
    finally:
        await kernel.auth.close()
        await kernel.rate_limits.close()


@hookimpl(trylast=True)
def sc_cleanup_ctx(kernel: Kernel) -> list[object]:
    return [_auth]
