"""Rate limits per IP and per user (placeholder: allows everything)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..kernel import Kernel


class RateLimits:
    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    async def check_request(self, request: Any, rate_class: str, principal: Any) -> None:
        return None

    async def hit(self, rate_class: str, key: str) -> None:
        return None
