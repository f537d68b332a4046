"""Password policy and argon2id hashing off the event loop.

Hashing is deliberately slow (tens of milliseconds, tens of MiB): it runs in a small
thread pool owned by the application (argon2-cffi releases the GIL), and at most
``max_pending`` hashes may queue; beyond that callers get a fast 503 instead of an
unbounded backlog.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import ServiceUnavailable, ValidationFailed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int
    max_length: int

    def check(self, password: str, *, field: str = "password") -> None:
        """Raise a 422 naming the rule when ``password`` breaks the length policy."""
        length = len(password)
        if length < self.min_length:
            raise ValidationFailed(
                f"{field} is too short: use at least {self.min_length} characters (got {length})",
                code="password_too_short",
                status=422,
                min_length=self.min_length,
            )
        if length > self.max_length:
            raise ValidationFailed(
                f"{field} is too long: use at most {self.max_length} characters (got {length})",
                code="password_too_long",
                status=422,
                max_length=self.max_length,
            )


class HasherBusy(ServiceUnavailable):
    code = "auth_busy"


class PasswordHashing:
    """argon2id in a bounded thread pool."""

    def __init__(
        self, *, time_cost: int, memory_cost: int, parallelism: int, workers: int, max_pending: int
    ) -> None:
        self.hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
        )
        self.workers = workers
        self.max_pending = max_pending
        self._pending = 0
        self._executor: ThreadPoolExecutor | None = None
        self._dummy_hash: str | None = None

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="sc-argon2")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _run(self, func: object, *args: str) -> object:
        if self._pending >= self.max_pending:
            raise HasherBusy(
                "too many password checks in progress; retry in a moment",
                headers={"Retry-After": "1"},
            )
        self.start()
        self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, func, *args)  # type: ignore[arg-type]
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        return str(await self._run(self.hasher.hash, password))

    async def verify(self, password_hash: str, password: str) -> bool:
        return bool(await self._run(self._verify, password_hash, password))

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(password_hash, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.warning("a stored password hash could not be verified (corrupt or unknown)")
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash used other cost parameters than configured."""
        try:
            return bool(self.hasher.check_needs_rehash(password_hash))
        except InvalidHashError:
            return True

    async def burn(self, password: str) -> None:
        """Spend the time of one verification (unknown account at login), so a
        response's latency does not tell whether the email is registered."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("secureconnect-timing-equaliser")
        await self.verify(self._dummy_hash, password)
