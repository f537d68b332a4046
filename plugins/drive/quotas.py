"""Exact per-user quotas in SQL (no read-modify-write in Python).

``reserve`` is one conditional ``UPDATE drive_quotas SET used = used + n WHERE user_id
= :u AND used + n <= COALESCE(limit_bytes, :default)``: the database serialises
concurrent writers of the row (row lock on PostgreSQL, the write lock on SQLite), so
parallel reservations can never sum past the limit (owncloud/client#5027). ``release``
subtracts; callers release only when the statement that removed the file row (or
shrank it) changed a row, so a release happens exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from secureconnect.errors import Problem

from .models import quotas


class QuotaExceeded(Problem):
    status, code, title = 507, "quota_exceeded", "Insufficient Storage"


@dataclass(frozen=True)
class Quota:
    used: int
    limit: int


async def _ensure_row(s: AsyncSession, user_id: str) -> None:
    dialect = s.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(quotas).values(user_id=user_id, used=0, limit_bytes=None)
    await s.execute(stmt.on_conflict_do_nothing(index_elements=["user_id"]))


async def reserve(s: AsyncSession, user_id: str, n: int, default_limit: int) -> bool:
    await _ensure_row(s, user_id)
    limit = func.coalesce(quotas.c.limit_bytes, default_limit)
    result = await s.execute(
        update(quotas)
        .where(quotas.c.user_id == user_id, quotas.c.used + n <= limit)
        .values(used=quotas.c.used + n)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release(s: AsyncSession, user_id: str, n: int) -> None:
    await s.execute(
        update(quotas)
        .where(quotas.c.user_id == user_id)
        .values(used=case((quotas.c.used >= n, quotas.c.used - n), else_=0))
    )


async def read(s: AsyncSession, user_id: str, default_limit: int) -> Quota:
    row = (await s.execute(
        select(quotas.c.used, quotas.c.limit_bytes).where(quotas.c.user_id == user_id)
    )).first()
    if row is None:
        return Quota(0, default_limit)
    return Quota(int(row.used), default_limit if row.limit_bytes is None else int(row.limit_bytes))


async def set_limit(s: AsyncSession, user_id: str, limit: int | None) -> None:
    """Per-user override (``None`` returns the user to the default quota)."""
    await _ensure_row(s, user_id)
    await s.execute(update(quotas).where(quotas.c.user_id == user_id).values(limit_bytes=limit))
