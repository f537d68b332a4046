"""Sessions: login, refresh-token rotation, revocation and the access-token check
made on every authenticated request."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta

from sqlalchemy import bindparam, delete, insert, select, update

from ..errors import Forbidden, Unauthorized, ValidationFailed
from ..ids import new_id_str
from . import models as m
from .core import AuthCore
from .tokens import AccessClaims, digest, new_opaque_token
from .values import REVOKED_TOPIC, Principal, TokenPair

log = logging.getLogger(__name__)

_CACHE_SESSION = "auth:sess:"
_CACHE_JTI = "auth:jti:"
_REVOKED = "revoked"
_ACTIVE = "active"
_SESSION_STATE = select(m.sessions.c.revoked_at, m.sessions.c.expires_at).where(
    m.sessions.c.id == bindparam("session_id"))


class SessionsMixin(AuthCore):
    """The session half of ``kernel.auth``."""

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
        if row.disabled_at is not None:
            # told only to whoever knows the password: no account enumeration
            self.attempts.labels("disabled").inc()
            raise Forbidden("this account is disabled; ask an administrator",
                            code="account_disabled")
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
        # one round trip for both (MGET on Redis)
        jti_state, state = await self._cache_get_many(jti_key, session_key)
        if jti_state == _REVOKED:
            raise _revoked()
        if state == _ACTIVE:
            return
        if state == _REVOKED:
            raise _revoked()
        row = await self.kernel.db.fetch_one(_SESSION_STATE,
                                             {"session_id": str(claims.session_id)})
        if row is None or row.revoked_at is not None or row.expires_at <= self.now():
            await self._cache_set(session_key, _REVOKED, self._revocation_ttl)
            raise _revoked()
        await self._cache_set(session_key, _ACTIVE, self.settings.session_cache_ttl)

    async def _cache_get_many(self, *keys: str) -> list[str | None]:
        try:
            return await self.kernel.cache.get_many(*keys)
        except Exception:
            self.cache_errors.inc()
            return [None] * len(keys)

    async def _cache_set(self, key: str, value: str, ttl: float) -> None:
        try:
            await self.kernel.cache.set(key, value, ttl=ttl)
        except Exception:
            self.cache_errors.inc()
            log.warning("revocation cache write failed for %s", key.split(":", 2)[1])

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


def _bad_credentials() -> Unauthorized:
    return Unauthorized("the email or password is wrong", code="invalid_credentials")


def _revoked() -> Unauthorized:
    return Unauthorized("the access token was revoked; log in again", code="token_revoked")
