"""Accounts: registration, look-ups, email verification and password reset."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from ..ids import new_id_str
from . import models as m
from .core import AuthCore
from .email import Mail
from .tokens import digest, new_opaque_token
from .values import Principal, User

# built once: every authenticated ``/v1/users/me`` runs it
_USER_BY_ID = select(m.users).where(m.users.c.id == bindparam("user_id"))


def user_version(user_id: str | uuid.UUID) -> str:
    """The read-cache key every change of the account's row moves (store/readcache.py):
    ``/v1/users/me`` answers cached from memory are built from it."""
    return f"auth:user:{user_id}"


class AccountsMixin(AuthCore):
    """The account half of ``kernel.auth``."""

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
        row = await self.kernel.db.fetch_one(_USER_BY_ID, {"user_id": str(user_id)})
        return None if row is None else User.from_row(row)

    async def existing_user_ids(self, user_ids: Iterable[str | uuid.UUID]) -> set[str]:
        """Which of ``user_ids`` are accounts (for plugins validating participants)."""
        wanted = {str(u) for u in user_ids}
        if not wanted:
            return set()
        async with self.kernel.db.connect() as conn:
            rows = await conn.execute(select(m.users.c.id).where(m.users.c.id.in_(wanted)))
            return {r.id for r in rows}

    async def set_display_name(self, user_id: str, display_name: str) -> User:
        """Rename an account (the user directory's ``PATCH /v1/users/me``)."""
        display_name = self.clean_display_name(display_name)
        async with self.kernel.db.connect() as conn:
            await conn.execute(update(m.users).where(m.users.c.id == str(user_id))
                               .values(display_name=display_name))
        await self._changed(user_id)
        user = await self.get_user(user_id)
        if user is None:
            raise Unauthorized("the account no longer exists", code="invalid_token")
        return user

    # -- administration (the admin API) ---------------------------------------------------
    async def set_disabled(self, user_id: str, disabled: bool) -> User:
        """Disable (every session ends at once, sign-in refused) or enable an account."""
        async with self.kernel.db.connect() as conn:
            done = await conn.execute(update(m.users).where(m.users.c.id == str(user_id))
                                      .values(disabled_at=self.now() if disabled else None))
        await self._changed(user_id)
        if not done.rowcount:
            raise NotFound("no such user", code="user_not_found")
        if disabled:
            await self.revoke_all_sessions(str(user_id), reason="disabled")
        return await self._existing(user_id)

    async def set_role(self, user_id: str, role: str) -> User:
        """Change the role. A demotion ends the account's sessions (their tokens carry
        the old role); a promotion takes effect at the next token rotation."""
        if role not in m.ROLES:
            raise ValidationFailed(f"role must be one of {', '.join(m.ROLES)}",
                                   code="invalid_role", status=422)
        before = await self._existing(user_id)
        async with self.kernel.db.connect() as conn:
            await conn.execute(update(m.users).where(m.users.c.id == str(user_id))
                               .values(role=role))
        await self._changed(user_id)
        if before.role == "admin" and role != "admin":
            await self.revoke_all_sessions(str(user_id), reason="role_changed")
        return await self._existing(user_id)

    async def delete_user(self, user_id: str) -> None:
        """Delete the account: sessions end at once, then every plugin removes its
        per-user data (``sc_user_deleted``)."""
        user = await self._existing(user_id)
        await self.revoke_all_sessions(str(user_id), reason="deleted")
        async with self.kernel.db.connect() as conn:
            await conn.execute(delete(m.users).where(m.users.c.id == str(user_id)))
        await self._changed(user_id)
        await self.kernel.notify("sc_user_deleted", user=user.as_dict())

    async def delete_own_account(self, principal: Principal, password: str) -> None:
        """``DELETE /v1/users/me``: the password confirms it."""
        # wrong passwords are limited like logins (a stolen token must not brute-force)
        await self.kernel.rate_limits.hit("login", f"delete:{principal.user_id}")
        async with self.kernel.db.connect() as conn:
            row = (await conn.execute(select(m.users.c.password_hash)
                                      .where(m.users.c.id == str(principal.user_id)))).first()
        if row is None or len(password) > self.policy.max_length or not (
                await self.passwords.verify(row.password_hash, password)):
            raise Forbidden("the password is not correct", code="invalid_password")
        await self.delete_user(str(principal.user_id))

    async def _changed(self, user_id: str | uuid.UUID) -> None:
        """After a commit that changed the account's row: cached answers built from it
        are stale here and on every instance."""
        await self.kernel.read_cache.invalidate(user_version(user_id))

    async def _existing(self, user_id: str) -> User:
        user = await self.get_user(user_id) if len(str(user_id)) <= 64 else None
        if user is None:
            raise NotFound("no such user", code="user_not_found")
        return user

    async def me(self, principal: Principal) -> User:
        user = await self.get_user(principal.user_id)
        if user is None:  # deleted after the token was issued
            raise Unauthorized("the account no longer exists", code="invalid_token")
        return user

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
        await self._changed(user_id)
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
        # The lookup and the token insert run after the answer: the caller's latency is
        # the same whether the account exists or not.
        self.mailer.defer(lambda: self._mail_reset_link(email), "a password-reset mail")

    async def _mail_reset_link(self, email: str) -> None:
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
        await self._changed(user_id)
        await self.revoke_all_sessions(user_id, reason="password_reset")
