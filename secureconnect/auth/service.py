"""Accounts and sessions: the logic behind ``/v1/auth/*`` and every authenticated request.

* Registration, login, email verification and password reset (argon2id off the loop).
* Sessions: a login opens a session; its refresh token is opaque, stored as a digest
  and rotated on every refresh. Presenting a rotated refresh token again is treated as
  theft: the whole session is revoked (the newest refresh token included).
* :meth:`AuthService.authenticate` verifies an access token and checks that neither
  its session nor its ``jti`` was revoked: an in-process set of what this instance
  revoked (so a Redis outage can never re-admit a token here), then the cache, then
  the database (the source of truth), whose answer is cached for
  ``session_cache_ttl`` seconds.
* Revocations are published on the bus topic :data:`REVOKED_TOPIC` so that other
  instances and the WebSocket gateway drop the session's sockets at once.

No aiohttp here: routes parse and serialise, this module decides.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, RateLimited, Unauthorized, ValidationFailed
from ..ids import new_id_str
from . import models as m
from .email import Mail, Mailer, build_sender
from .passwords import PasswordHashing, PasswordPolicy
from .tokens import AccessClaims, KeyRing, digest, new_opaque_token

if TYPE_CHECKING:
    from ..kernel import Kernel
    from ..store.bus import Subscription

log = logging.getLogger(__name__)

#: bus topic carrying ``{"session_ids": [...], "user_id": ..., "reason": ...}`` (JSON)
#: whenever sessions are revoked; subscribers close what belongs to those sessions
REVOKED_TOPIC = "auth:revoked"

_CACHE_SESSION = "auth:sess:"
_CACHE_JTI = "auth:jti:"
_REVOKED = "revoked"
_ACTIVE = "active"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


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

    @classmethod
    def from_row(cls, row: Any) -> User:
        return cls(
            row.id, row.email, row.display_name, row.role, row.email_verified_at, row.created_at
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


class AuthService:
    """``kernel.auth``: accounts, sessions and the access-token check."""

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

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.passwords.start()
        self._subscription = await self.kernel.bus.subscribe(REVOKED_TOPIC, self._on_revoked)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None
        await self.mailer.drain()
        self.passwords.close()

    def _on_revoked(self, topic: str, message: bytes) -> None:
        """Revocations published by any instance (this one included)."""
        try:
            data = json.loads(message)
            for sid in data.get("session_ids", ()):
                self.revoked.add(_CACHE_SESSION + str(sid), self._revocation_ttl)
        except (ValueError, AttributeError, TypeError):
            log.warning("ignored a malformed %s message", REVOKED_TOPIC)

    @property
    def _revocation_ttl(self) -> float:
        # an access token of a revoked session is useless after it expires anyway
        return self.settings.access_ttl + self.settings.leeway + 60

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

    # -- accounts ------------------------------------------------------------------------
    async def register(
        self,
        email: str,
        password: str,
        display_name: str,
        *,
        role: str = "user",
        verified: bool = False,
    ) -> User:
        """Create an account; ``verified`` (operator-created accounts) skips the
        verification mail."""
        email = self.normalise_email(email)
        display_name = self.clean_display_name(display_name)
        self.policy.check(password)
        password_hash = await self.passwords.hash(password)
        now = self.now()
        user_id = new_id_str()
        verified_at = now if verified else None
        try:
            async with self.kernel.db.connect() as conn:
                await conn.execute(
                    insert(m.users).values(
                        id=user_id,
                        email=email,
                        display_name=display_name,
                        password_hash=password_hash,
                        role=role,
                        created_at=now,
                        email_verified_at=verified_at,
                    )
                )
        except IntegrityError:
            raise Conflict(
                "an account with this email already exists; log in or reset the password",
                code="email_taken",
            ) from None
        user = User(user_id, email, display_name, role, verified_at, now)
        if not verified:
            await self._send_email_token(user, "verify_email")
        await self.kernel.notify("sc_user_registered", user=user.as_dict())
        return user

    async def get_user(self, user_id: str | uuid.UUID) -> User | None:
        async with self.kernel.db.connect() as conn:
            row = (await conn.execute(select(m.users).where(m.users.c.id == str(user_id)))).first()
        return None if row is None else User.from_row(row)

    async def existing_user_ids(self, user_ids: Iterable[str | uuid.UUID]) -> set[str]:
        """Which of ``user_ids`` are accounts (for plugins validating participants)."""
        wanted = {str(u) for u in user_ids}
        if not wanted:
            return set()
        async with self.kernel.db.connect() as conn:
            rows = await conn.execute(select(m.users.c.id).where(m.users.c.id.in_(wanted)))
            return {r.id for r in rows}

    async def me(self, principal: Principal) -> User:
        user = await self.get_user(principal.user_id)
        if user is None:  # deleted after the token was issued
            raise Unauthorized("the account no longer exists", code="invalid_token")
        return user

    # -- sessions --------------------------------------------------------------------------
    async def login(self, email: str, password: str) -> TokenPair:
        try:
            email = self.normalise_email(email)
        except ValidationFailed:
            self.attempts.labels("invalid_input").inc()
            raise
        await self.kernel.rate_limits.hit("login", f"email:{email}")
        if len(password) > self.policy.max_length:
            self.attempts.labels("invalid_credentials").inc()
            raise _bad_credentials()
        async with self.kernel.db.connect() as conn:
            row = (await conn.execute(select(m.users).where(m.users.c.email == email))).first()
        if row is None:
            await self.passwords.burn(password)
            self.attempts.labels("invalid_credentials").inc()
            raise _bad_credentials()
        if not await self.passwords.verify(row.password_hash, password):
            self.attempts.labels("invalid_credentials").inc()
            raise _bad_credentials()
        if self.passwords.needs_rehash(row.password_hash):
            new_hash = await self.passwords.hash(password)
            async with self.kernel.db.connect() as conn:
                await conn.execute(
                    update(m.users).where(m.users.c.id == row.id).values(password_hash=new_hash)
                )
        pair = await self._open_session(row.id, row.role)
        self.attempts.labels("success").inc()
        return pair

    async def _open_session(self, user_id: str, role: str) -> TokenPair:
        now = self.now()
        session_id = new_id_str()
        refresh = new_opaque_token()
        async with self.kernel.db.connect() as conn:
            await conn.execute(
                insert(m.sessions).values(
                    id=session_id,
                    user_id=user_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.settings.refresh_ttl),
                )
            )
            await conn.execute(
                insert(m.refresh_tokens).values(
                    token_hash=digest(refresh), session_id=session_id, generation=1, created_at=now
                )
            )
        return self._pair(user_id, session_id, role, refresh, self.settings.refresh_ttl)

    def _pair(
        self, user_id: str, session_id: str, role: str, refresh: str, refresh_left: int
    ) -> TokenPair:
        s = self.settings
        access, _ = self.keys.issue(
            issuer=s.issuer,
            audience=s.audience,
            user_id=user_id,
            session_id=session_id,
            role=role,
            ttl=s.access_ttl,
        )
        return TokenPair(access, refresh, s.access_ttl, refresh_left)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the presented token stops working, a new pair is returned. A token
        that was already rotated revokes its whole session (reuse detection)."""
        now = self.now()
        token_hash = digest(refresh_token)
        reused_session: str | None = None
        async with self.kernel.db.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        m.refresh_tokens.c.session_id,
                        m.refresh_tokens.c.generation,
                        m.refresh_tokens.c.rotated_at,
                        m.sessions.c.user_id,
                        m.sessions.c.expires_at,
                        m.sessions.c.revoked_at,
                        m.users.c.role,
                    )
                    .join(m.sessions, m.sessions.c.id == m.refresh_tokens.c.session_id)
                    .join(m.users, m.users.c.id == m.sessions.c.user_id)
                    .where(m.refresh_tokens.c.token_hash == token_hash)
                )
            ).first()
            if row is None:
                raise Unauthorized("the refresh token is not valid", code="invalid_token")
            if row.revoked_at is not None:
                raise Unauthorized("the session was revoked; log in again", code="token_revoked")
            if row.expires_at <= now:
                raise Unauthorized("the session has expired; log in again", code="token_expired")
            rotated = None
            if row.rotated_at is None:
                # conditional update: of two concurrent refreshes with one token, one wins
                rotated = await conn.execute(
                    update(m.refresh_tokens)
                    .where(
                        m.refresh_tokens.c.token_hash == token_hash,
                        m.refresh_tokens.c.rotated_at.is_(None),
                    )
                    .values(rotated_at=now)
                )
            if rotated is None or rotated.rowcount != 1:
                reused_session = row.session_id
            else:
                refresh = new_opaque_token()
                await conn.execute(
                    insert(m.refresh_tokens).values(
                        token_hash=digest(refresh),
                        session_id=row.session_id,
                        generation=row.generation + 1,
                        created_at=now,
                    )
                )
                await conn.execute(
                    update(m.sessions)
                    .where(m.sessions.c.id == row.session_id)
                    .values(last_refreshed_at=now)
                )
        if reused_session is not None:
            self.reuse_detected.inc()
            log.warning("refresh token reuse on session %s: revoking the session", reused_session)
            await self.revoke_sessions(
                [reused_session], reason="refresh_token_reuse", user_id=row.user_id
            )
            raise Unauthorized(
                "the refresh token was already used; the session is revoked", code="token_reused"
            )
        left = max(1, int((row.expires_at - now).total_seconds()))
        return self._pair(row.user_id, row.session_id, row.role, refresh, left)

    async def logout(self, principal: Principal) -> None:
        await self.revoke_access_token(principal)
        await self.revoke_sessions(
            [str(principal.session_id)], reason="logout", user_id=str(principal.user_id)
        )

    async def revoke_access_token(self, principal: Principal) -> None:
        """Revoke one access token by ``jti`` until it would have expired."""
        ttl = max(1.0, principal.expires_at - time.time() + self.settings.leeway)
        key = _CACHE_JTI + principal.jti
        self.revoked.add(key, ttl)
        await self._cache_set(key, _REVOKED, ttl)

    async def revoke_all_sessions(self, user_id: str, *, reason: str) -> list[str]:
        async with self.kernel.db.connect() as conn:
            rows = await conn.execute(
                select(m.sessions.c.id).where(
                    m.sessions.c.user_id == user_id, m.sessions.c.revoked_at.is_(None)
                )
            )
            ids = [r.id for r in rows]
        await self.revoke_sessions(ids, reason=reason, user_id=user_id)
        return ids

    async def revoke_sessions(
        self, session_ids: list[str], *, reason: str, user_id: str | None = None
    ) -> None:
        """Revoke sessions everywhere: database (truth) → this instance → cache → bus."""
        if not session_ids:
            return
        now = self.now()
        async with self.kernel.db.connect() as conn:
            await conn.execute(
                update(m.sessions)
                .where(m.sessions.c.id.in_(session_ids), m.sessions.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            )
        ttl = self._revocation_ttl
        for sid in session_ids:
            self.revoked.add(_CACHE_SESSION + sid, ttl)
            await self._cache_set(_CACHE_SESSION + sid, _REVOKED, ttl)
        self.revocations.labels(reason).inc(len(session_ids))
        message = json.dumps(
            {"session_ids": session_ids, "user_id": user_id, "reason": reason}
        ).encode()
        try:
            await self.kernel.bus.publish(REVOKED_TOPIC, message)
        except Exception:
            log.exception(
                "publishing a session revocation failed (the cache and database "
                "still refuse the session)"
            )
        # after the revocation is out: plugins clean up what was tied to the sessions
        await self.kernel.notify(
            "sc_sessions_revoked", user_id=user_id, session_ids=list(session_ids), reason=reason
        )

    # -- every authenticated request ---------------------------------------------------
    async def authenticate(self, token: str) -> Principal:
        """The caller of an access token, or :class:`Unauthorized` (``invalid_token``,
        ``token_expired``, ``token_revoked``)."""
        s = self.settings
        try:
            claims = self.keys.verify(token, issuer=s.issuer, audience=s.audience, leeway=s.leeway)
            await self._check_not_revoked(claims)
        except Unauthorized as exc:
            self.token_rejections.labels(exc.code).inc()
            raise
        return Principal(
            claims.user_id, claims.session_id, claims.jti, claims.role, float(claims.expires_at)
        )

    async def _check_not_revoked(self, claims: AccessClaims) -> None:
        session_key = _CACHE_SESSION + str(claims.session_id)
        jti_key = _CACHE_JTI + claims.jti
        if session_key in self.revoked or jti_key in self.revoked:
            raise _revoked()
        if await self._cache_get(jti_key) == _REVOKED:
            raise _revoked()
        state = await self._cache_get(session_key)
        if state == _ACTIVE:
            return
        if state == _REVOKED:
            raise _revoked()
        async with self.kernel.db.connect() as conn:
            row = (
                await conn.execute(
                    select(m.sessions.c.revoked_at, m.sessions.c.expires_at).where(
                        m.sessions.c.id == str(claims.session_id)
                    )
                )
            ).first()
        if row is None or row.revoked_at is not None or row.expires_at <= self.now():
            await self._cache_set(session_key, _REVOKED, self._revocation_ttl)
            raise _revoked()
        await self._cache_set(session_key, _ACTIVE, self.settings.session_cache_ttl)

    async def _cache_get(self, key: str) -> str | None:
        try:
            return await self.kernel.cache.get(key)
        except Exception:
            self.cache_errors.inc()
            return None

    async def _cache_set(self, key: str, value: str, ttl: float) -> None:
        try:
            await self.kernel.cache.set(key, value, ttl=ttl)
        except Exception:
            self.cache_errors.inc()
            log.warning("revocation cache write failed for %s", key.split(":", 2)[1])

    # -- email tokens ----------------------------------------------------------------------
    async def _send_email_token(self, user: User, purpose: str) -> None:
        ttl = (
            self.settings.verification_ttl if purpose == "verify_email" else self.settings.reset_ttl
        )
        token = new_opaque_token()
        now = self.now()
        async with self.kernel.db.connect() as conn:
            await conn.execute(
                insert(m.email_tokens).values(
                    token_hash=digest(token),
                    user_id=user.id,
                    purpose=purpose,
                    created_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
        template = (
            self.settings.verify_url if purpose == "verify_email" else self.settings.reset_url
        )
        link = template.format(public_url=self.settings.public_url, token=token)
        if purpose == "verify_email":
            subject = "Confirm your email address"
            text = (
                f"Hello {user.display_name},\n\nconfirm your address by opening\n{link}\n\n"
                f"The link expires in {ttl // 3600 or 1} hour(s).\n"
            )
        else:
            subject = "Reset your password"
            text = (
                f"Hello {user.display_name},\n\nsomeone asked to reset your password. "
                f"If it was you, open\n{link}\n\nThe link expires in "
                f"{max(1, ttl // 60)} minutes and works once. Otherwise ignore this mail.\n"
            )
        self.mailer.submit(
            Mail(
                user.email, subject, text, {"purpose": purpose, "token": token, "user_id": user.id}
            )
        )

    async def _consume_email_token(self, token: str, purpose: str) -> str:
        """Mark a single-use token used; returns its user id, or a 400 naming why not."""
        now = self.now()
        token_hash = digest(token)
        async with self.kernel.db.connect() as conn:
            row = (
                await conn.execute(
                    select(m.email_tokens).where(
                        m.email_tokens.c.token_hash == token_hash,
                        m.email_tokens.c.purpose == purpose,
                    )
                )
            ).first()
            if row is None or row.used_at is not None:
                raise ValidationFailed(
                    "the token is unknown or was already used; ask for a new one",
                    code="invalid_token",
                )
            if row.expires_at <= now:
                raise ValidationFailed(
                    "the token has expired; ask for a new one", code="token_expired"
                )
            done = await conn.execute(
                update(m.email_tokens)
                .where(
                    m.email_tokens.c.token_hash == token_hash, m.email_tokens.c.used_at.is_(None)
                )
                .values(used_at=now)
            )
            if done.rowcount != 1:
                raise ValidationFailed("the token was already used", code="invalid_token")
            return str(row.user_id)

    async def verify_email(self, token: str) -> User:
        user_id = await self._consume_email_token(token, "verify_email")
        async with self.kernel.db.connect() as conn:
            await conn.execute(
                update(m.users)
                .where(m.users.c.id == user_id, m.users.c.email_verified_at.is_(None))
                .values(email_verified_at=self.now())
            )
        user = await self.get_user(user_id)
        if user is None:
            raise ValidationFailed("the account no longer exists", code="invalid_token")
        return user

    async def request_password_reset(self, email: str) -> None:
        """Mail a reset link when the account exists; the caller answers 202 either way."""
        try:
            email = self.normalise_email(email)
        except ValidationFailed:
            return
        try:
            await self.kernel.rate_limits.hit("password_reset", f"email:{email}")
        except RateLimited:
            # no more mails to this address for now, and no sign of it to the caller
            return
        async with self.kernel.db.connect() as conn:
            row = (await conn.execute(select(m.users).where(m.users.c.email == email))).first()
        if row is not None:
            await self._send_email_token(User.from_row(row), "password_reset")

    async def confirm_password_reset(self, token: str, new_password: str) -> None:
        """Set the new password and revoke every session of the account."""
        self.policy.check(new_password, field="new_password")
        password_hash = await self.passwords.hash(new_password)
        user_id = await self._consume_email_token(token, "password_reset")
        now = self.now()
        async with self.kernel.db.connect() as conn:
            await conn.execute(
                update(m.users)
                .where(m.users.c.id == user_id)
                .values(password_hash=password_hash, password_changed_at=now)
            )
            # other outstanding reset links die with the password they were meant to reset
            await conn.execute(
                update(m.email_tokens)
                .where(
                    m.email_tokens.c.user_id == user_id,
                    m.email_tokens.c.purpose == "password_reset",
                    m.email_tokens.c.used_at.is_(None),
                )
                .values(used_at=now)
            )
        await self.revoke_all_sessions(user_id, reason="password_reset")

    # -- maintenance ---------------------------------------------------------------------
    async def delete_expired(self, *, session_grace: float = 86400) -> tuple[int, int]:
        """Delete expired email tokens and sessions ended more than ``session_grace``
        seconds ago (their rotated refresh tokens go with them). Returns the counts."""
        now = self.now()
        async with self.kernel.db.connect() as conn:
            tokens = await conn.execute(
                delete(m.email_tokens).where(m.email_tokens.c.expires_at <= now)
            )
            old = now - timedelta(seconds=session_grace)
            await conn.execute(
                delete(m.refresh_tokens).where(
                    m.refresh_tokens.c.session_id.in_(
                        select(m.sessions.c.id).where(m.sessions.c.expires_at <= old)
                    )
                )
            )
            sessions = await conn.execute(delete(m.sessions).where(m.sessions.c.expires_at <= old))
        return int(tokens.rowcount or 0), int(sessions.rowcount or 0)

    async def count_active_sessions(self, user_id: str) -> int:
        async with self.kernel.db.connect() as conn:
            value = (
                await conn.execute(
                    select(func.count())
                    .select_from(m.sessions)
                    .where(
                        and_(
                            m.sessions.c.user_id == user_id,
                            m.sessions.c.revoked_at.is_(None),
                            m.sessions.c.expires_at > self.now(),
                        )
                    )
                )
            ).scalar_one()
        return int(value)


def _bad_credentials() -> Unauthorized:
    return Unauthorized("the email or password is wrong", code="invalid_credentials")


def _revoked() -> Unauthorized:
    return Unauthorized("the access token was revoked; log in again", code="token_revoked")


async def create_user(
    kernel: Kernel, email: str, password: str, display_name: str, admin: bool = False
) -> dict[str, Any]:
    """Create an account from the command line (``secureconnect create-user``)."""
    user = await kernel.auth.register(
        email, password, display_name, role="admin" if admin else "user", verified=True
    )
    await kernel.auth.mailer.drain()
    return user.as_dict()


__all__ = [
    "REVOKED_TOPIC",
    "AuthService",
    "Principal",
    "TokenPair",
    "User",
    "create_user",
    "utcnow",
]
