"""The value types of auth: who is calling (:class:`Principal`), what a login returns
(:class:`TokenPair`), an account (:class:`User`), the ``[auth]`` settings it needs, and
the in-process set of revoked sessions. No I/O here."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: bus topic carrying ``{"session_ids": [...], "user_id": ..., "reason": ...}`` (JSON)
#: whenever sessions are revoked; subscribers close what belongs to those sessions
REVOKED_TOPIC = "auth:revoked"



@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified claims of an access token."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    role: str = "user"
    expires_at: float = 0.0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    token_type: str = "Bearer"


@dataclass(frozen=True)
class User:
    id: str
    email: str
    display_name: str
    role: str
    email_verified_at: datetime | None
    created_at: datetime
    #: set while an administrator has disabled the account
    disabled_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            row.id, row.email, row.display_name, row.role, row.email_verified_at, row.created_at,
            row.disabled_at,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "display_name": self.display_name,
            "role": self.role,
            "email_verified": self.email_verified_at is not None,
            "email_verified_at": self.email_verified_at,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class AuthSettings:
    issuer: str
    audience: str
    access_ttl: int
    refresh_ttl: int
    leeway: float
    session_cache_ttl: float
    verification_ttl: int
    reset_ttl: int
    display_name_max: int
    verify_url: str
    reset_url: str
    public_url: str

    @classmethod
    def from_settings(cls, settings: Any) -> AuthSettings:
        s = settings.auth
        return cls(
            str(s.jwt_issuer),
            str(s.jwt_audience),
            int(s.access_token_ttl),
            int(s.refresh_token_ttl),
            float(s.jwt_leeway),
            float(s.session_cache_ttl),
            int(s.email_verification_ttl),
            int(s.password_reset_ttl),
            int(s.display_name_max_length),
            str(s.verify_email_url),
            str(s.password_reset_url),
            str(settings.app.public_url).rstrip("/"),
        )


class RevokedSessions:
    """What this instance revoked (or heard revoked on the bus), until the longest
    access token of those sessions has expired. Bounded: the oldest entries go first."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._until: OrderedDict[str, float] = OrderedDict()
        self.max_entries = max_entries

    def add(self, key: str, ttl: float) -> None:
        self._until[key] = time.monotonic() + ttl
        self._until.move_to_end(key)
        while len(self._until) > self.max_entries:
            self._until.popitem(last=False)

    def __contains__(self, key: str) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._until[key]
            return False
        return True


def utcnow() -> datetime:
    return datetime.now(UTC)
