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

No aiohttp here: routes parse and serialise, these modules decide. The class is split by
responsibility: ``values.py`` (value types), ``core.py`` (shared state, input rules),
``accounts.py`` and ``sessions.py``; this module assembles :class:`AuthService`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .accounts import AccountsMixin
from .sessions import SessionsMixin
from .values import (
    REVOKED_TOPIC,
    AuthSettings,
    Principal,
    RevokedSessions,
    TokenPair,
    User,
    utcnow,
)

if TYPE_CHECKING:
    from ..kernel import Kernel


class AuthService(AccountsMixin, SessionsMixin):
    """``kernel.auth``: accounts (``accounts.py``), sessions and the access-token check
    (``sessions.py``), over the shared state of ``core.py``."""

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
    "AuthSettings",
    "Principal",
    "RevokedSessions",
    "TokenPair",
    "User",
    "create_user",
    "utcnow",
]
