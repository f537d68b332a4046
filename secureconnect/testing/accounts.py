"""Create accounts through the REST API in tests.

    user = await register_and_login(client)
    r = await client.get("/v1/users/me", headers=user.headers)

Everything goes through the public endpoints (``POST /v1/auth/register`` then
``POST /v1/auth/login``), so a test sees exactly what a client would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

#: a password that satisfies the default length policy
DEFAULT_PASSWORD = "correct horse battery staple"

_counter = itertools.count(1)


@dataclass
class TestUser:
    """An account created and logged in through the API."""

    __test__ = False  # not a pytest test class despite the name

    user_id: str
    email: str
    password: str
    display_name: str
    access_token: str
    refresh_token: str
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.headers:
            self.headers = {"Authorization": f"Bearer {self.access_token}"}

    def use_tokens(self, access_token: str, refresh_token: str) -> None:
        """Adopt a new token pair (after ``/v1/auth/refresh``)."""
        self.access_token = access_token
        self.refresh_token = refresh_token
        self.headers = {"Authorization": f"Bearer {access_token}"}


def unique_email(prefix: str = "user") -> str:
    """A fresh address per call (unique within and across test processes)."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{os.urandom(3).hex()}@example.com"


async def _expect(resp: Any, status: int, what: str) -> Any:
    if resp.status != status:
        raise AssertionError(
            f"{what}: expected HTTP {status}, got {resp.status}: {await resp.text()}"
        )
    return await resp.json()


async def register(
    client: Any,
    email: str | None = None,
    password: str | None = None,
    display_name: str | None = None,
) -> dict[str, Any]:
    """``POST /v1/auth/register``; returns the created user (fails the test on non-201)."""
    email = email or unique_email()
    body = {
        "email": email,
        "password": password or DEFAULT_PASSWORD,
        "display_name": display_name or email.split("@", 1)[0],
    }
    resp = await client.post("/v1/auth/register", json=body)
    user: dict[str, Any] = await _expect(resp, 201, f"register {email}")
    return user


async def login(client: Any, email: str, password: str = DEFAULT_PASSWORD) -> dict[str, Any]:
    """``POST /v1/auth/login``; returns the token pair (fails the test on non-200)."""
    resp = await client.post("/v1/auth/login", json={"email": email, "password": password})
    tokens: dict[str, Any] = await _expect(resp, 200, f"login {email}")
    return tokens


async def register_and_login(
    client: Any,
    email: str | None = None,
    password: str | None = None,
    display_name: str | None = None,
) -> TestUser:
    """Register a fresh account (unique email unless given) and log it in."""
    email = email or unique_email()
    password = password or DEFAULT_PASSWORD
    user = await register(client, email, password, display_name)
    tokens = await login(client, user["email"], password)
    return TestUser(
        user_id=str(user["id"]),
        email=str(user["email"]),
        password=password,
        display_name=str(user["display_name"]),
        access_token=str(tokens["access_token"]),
        refresh_token=str(tokens["refresh_token"]),
    )


async def mailed_token(client: Any, email: str, purpose: str, *, timeout: float = 5.0) -> str:
    """The newest token mailed to ``email`` for ``purpose`` (``verify_email`` or
    ``password_reset``), read from the outbox mail backend (the testing default)."""
    from ..app import KERNEL
    from .helpers import wait_for

    mailer = client.server.app[KERNEL].auth.mailer
    wanted = email.strip().lower()

    def newest() -> str | None:
        for mail in reversed(mailer.outbox):
            if mail.to == wanted and mail.tags.get("purpose") == purpose:
                return str(mail.tags["token"])
        return None

    token: str = await wait_for(newest, timeout=timeout, message=f"a {purpose} mail to {email}")
    return token


__all__ = [
    "DEFAULT_PASSWORD",
    "TestUser",
    "login",
    "mailed_token",
    "register",
    "register_and_login",
    "unique_email",
]


async def register_many(client: Any, n: int, *, batch: int = 10) -> list[TestUser]:
    """``n`` fresh logged-in accounts, registered ``batch`` at a time."""
    out: list[TestUser] = []
    while len(out) < n:
        size = min(batch, n - len(out))
        out += await asyncio.gather(*(register_and_login(client) for _ in range(size)))
    return out
