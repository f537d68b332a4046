"""Authentication service (placeholder until accounts land: every token is refused)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import Unauthorized

if TYPE_CHECKING:
    from ..kernel import Kernel


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


class AuthService:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    async def authenticate(self, token: str) -> Principal:
        raise Unauthorized("invalid access token", code="invalid_token")
