"""What the parts of :class:`~secureconnect.auth.service.AuthService` share: its
settings, key ring, password hashing, mailer, clock, metrics and the input rules."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from ..errors import ValidationFailed
from .email import Mailer, build_sender
from .passwords import PasswordHashing, PasswordPolicy
from .tokens import KeyRing
from .values import AuthSettings, RevokedSessions, utcnow

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..store.bus import Subscription

log = logging.getLogger(__name__)

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


class AuthCore:
    """State and rules shared by the accounts and sessions halves of the service."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._subscription: Subscription | None = None
        settings = kernel.settings
        s = settings.auth
        self.settings = AuthSettings.from_settings(settings)
        self.keys = KeyRing.from_settings(s, environment=str(settings.current_env).lower())
        self.policy = PasswordPolicy(int(s.password_min_length), int(s.password_max_length))
        self.passwords = PasswordHashing(
            time_cost=int(s.argon2_time_cost),
            memory_cost=int(s.argon2_memory_cost),
            parallelism=int(s.argon2_parallelism),
            workers=int(s.hash_workers),
            max_pending=int(s.hash_max_pending),
        )
        self.mailer = Mailer(build_sender(s), kernel.metrics, max_pending=int(s.mail_max_pending))
        self.revoked = RevokedSessions()
        environment = str(settings.current_env).lower()
        if environment == "production" and str(s.mail_backend) == "outbox":
            log.warning(
                "auth.mail_backend is 'outbox' in production: verification and reset "
                'mails are only logged; configure mail_backend = "smtp"'
            )
        #: the clock (tests move it to expire tokens without sleeping)
        self.now: Callable[[], datetime] = utcnow
        metrics = kernel.metrics
        self.attempts = metrics.counter(
            "auth_attempts_total", "Login attempts by outcome", ("result",)
        )
        self.token_rejections = metrics.counter(
            "auth_token_rejected_total", "Access tokens refused, by code", ("code",)
        )
        self.revocations = metrics.counter(
            "auth_sessions_revoked_total", "Sessions revoked, by reason", ("reason",)
        )
        self.reuse_detected = metrics.counter(
            "auth_refresh_token_reuse_total", "Rotated refresh tokens presented again"
        )
        self.cache_errors = metrics.counter(
            "auth_revocation_cache_errors_total",
            "Revocation cache reads/writes that failed (the database answered instead)",
        )

    # -- input rules -------------------------------------------------------------------
    @staticmethod
    def normalise_email(email: str) -> str:
        """Validated and normalised (IDNA domain, lower case) address, or a 422."""
        try:
            info = validate_email(email.strip(), check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValidationFailed(
                f"email is not a valid address: {exc}", code="invalid_email", status=422
            ) from None
        return str(info.normalized).lower()

    def clean_display_name(self, name: str) -> str:
        cleaned = " ".join(unicodedata.normalize("NFC", name).split())
        if _CONTROL.search(cleaned):
            raise ValidationFailed(
                "display_name must not contain control characters",
                code="invalid_display_name",
                status=422,
            )
        limit = self.settings.display_name_max
        if not cleaned or len(cleaned) > limit:
            raise ValidationFailed(
                f"display_name must have 1 to {limit} characters after trimming "
                f"(got {len(cleaned)})",
                code="invalid_display_name",
                status=422,
            )
        return cleaned

    async def revoke_all_sessions(self, user_id: str, *, reason: str) -> list[str]:
        """Revoke every open session of an account (see ``sessions.py``)."""
        raise NotImplementedError
