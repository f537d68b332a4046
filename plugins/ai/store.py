"""SQL access of the ai plugin: user settings, conversation policy, quota counters and
audit rows. No method takes or stores message content."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .models import (
    ai_audit,
    ai_conversation_policy,
    ai_usage,
    ai_user_settings,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from secureconnect.store.sql import Database

FEATURES = ("summary", "smart_replies")


@dataclass(frozen=True)
class UserAiSettings:
    enabled: bool = False
    language: str | None = None
    features: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(FEATURES, True))

    def as_dict(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "language": self.language,
                "features": dict(self.features)}


@dataclass(frozen=True)
class Policy:
    summary: bool = True
    smart_replies: bool = True
    updated_by: str | None = None
    updated_at: datetime | None = None

    def allows(self, feature: str) -> bool:
        return bool(getattr(self, feature))

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "smart_replies": self.smart_replies,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class AuditEntry:
    user_id: str
    conversation_id: str
    feature: str
    provider: str
    model: str
    stage: str
    message_count: int
    input_tokens: int
    output_tokens: int
    status: str
    latency_ms: int


class AiStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- user settings ------------------------------------------------------------------
    async def user_settings(self, user_id: str) -> UserAiSettings:
        row = await self.db.fetch_one(_SETTINGS, {"uid": user_id})
        if row is None:
            return UserAiSettings()
        features = dict.fromkeys(FEATURES, True)
        features.update({k: bool(v) for k, v in json.loads(row.features).items()
                         if k in FEATURES})
        return UserAiSettings(bool(row.enabled), row.language, features)

    async def save_user_settings(self, user_id: str, value: UserAiSettings) -> None:
        values = {"enabled": value.enabled, "language": value.language,
                  "features": json.dumps(value.features, sort_keys=True),
                  "updated_at": utcnow()}
        await self._upsert(ai_user_settings, ai_user_settings.c.user_id == user_id,
                           {"user_id": user_id}, values)

    async def forget_user(self, user_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(ai_user_settings).where(ai_user_settings.c.user_id == user_id))
            await s.execute(delete(ai_usage).where(ai_usage.c.user_id == user_id))

    # -- conversation policy ------------------------------------------------------------
    async def policy(self, conversation_id: str) -> Policy:
        row = await self.db.fetch_one(_POLICY, {"cid": conversation_id})
        if row is None:
            return Policy()
        return Policy(bool(row.summary), bool(row.smart_replies), row.updated_by, row.updated_at)

    async def save_policy(self, conversation_id: str, policy: Policy) -> None:
        values = {"summary": policy.summary, "smart_replies": policy.smart_replies,
                  "updated_by": policy.updated_by, "updated_at": policy.updated_at}
        await self._upsert(
            ai_conversation_policy,
            ai_conversation_policy.c.conversation_id == conversation_id,
            {"conversation_id": conversation_id}, values,
        )

    async def forget_conversation(self, conversation_id: str) -> None:
        async with self.db.session() as s:
            await s.execute(delete(ai_conversation_policy)
                            .where(ai_conversation_policy.c.conversation_id == conversation_id))

    # -- quota ----------------------------------------------------------------------------
    async def take_request(self, user_id: str, day: date, *, max_requests: int,
                           max_tokens: int) -> bool:
        """Count one request for today unless the user is at a limit; atomic (one
        conditional UPDATE), so concurrent requests cannot overshoot the request count.
        One short write, ``quick`` (see :meth:`record`)."""
        for _ in range(2):
            try:
                return await self.db.write(_take_request, user_id, day.isoformat(),
                                           max_requests, max_tokens, quick=True)
            except IntegrityError:
                continue  # a concurrent first request inserted the row: count again
        return False

    async def refund_request(self, user_id: str, day: date) -> None:
        """Give back the request :meth:`take_request` counted (refused before any
        provider call: it cost nothing)."""
        await self.db.write(_refund_request, user_id, day.isoformat(), quick=True)

    async def usage(self, user_id: str, day: date) -> tuple[int, int]:
        row = await self.db.fetch_one(_USAGE, {"uid": user_id, "day": day.isoformat()})
        return (int(row.requests), int(row.tokens)) if row else (0, 0)

    # -- audit ----------------------------------------------------------------------------
    async def record(self, user_id: str, day: date, entries: list[AuditEntry]) -> None:
        """One transaction: the request's tokens onto today's counter and one audit row
        per provider call.

        ``quick`` (like :meth:`take_request`): on a SQLite file the transaction runs on the
        event loop with the single writer's connection under a short budget, as chat's
        group commit does, instead of a hand-off to the writer thread, which held that
        connection — and chat's next group commit — for a thread wake-up each time
        (``bench/ai.py --busy writes``: these two writes alone at 1/s put chat's send p99
        at 1.07 times its idle neighbours against a placebo of 0.98; quick, 1.00 against
        1.02). Safe to run twice: a run past the budget is rolled back before the
        thread runs it."""
        tokens = sum(e.input_tokens + e.output_tokens for e in entries)
        now = utcnow()
        rows = [{"id": new_id(), "created_at": now, **e.__dict__} for e in entries]
        await self.db.write(_record, user_id, day.isoformat(), tokens, rows, quick=True)

    async def audit_rows(self, user_id: str) -> list[dict[str, Any]]:
        async with self.db.session() as s:
            rows = (await s.execute(
                select(ai_audit).where(ai_audit.c.user_id == user_id)
                .order_by(ai_audit.c.created_at, ai_audit.c.id)
            )).all()
        return [dict(r._mapping) for r in rows]

    async def prune(self, retention_days: int) -> int:
        cutoff = utcnow() - timedelta(days=retention_days)
        async with self.db.session() as s:
            result = await s.execute(delete(ai_audit).where(ai_audit.c.created_at < cutoff))
            old_days = (cutoff - timedelta(days=2)).date().isoformat()
            await s.execute(delete(ai_usage).where(ai_usage.c.day < old_days))
        return _rowcount(result)

    async def _upsert(self, table: Any, where: Any, key: dict[str, Any],
                      values: dict[str, Any]) -> None:
        for _ in range(2):
            async with self.db.session() as s:
                if _rowcount(await s.execute(update(table).where(where).values(**values))):
                    return
            try:
                async with self.db.session() as s:
                    await s.execute(insert(table).values(**key, **values))
                return
            except IntegrityError:
                continue  # inserted concurrently: update it


# -- statements built once (bound per call) and the write transactions ---------------
_SETTINGS = select(ai_user_settings).where(ai_user_settings.c.user_id == bindparam("uid"))
_POLICY = select(ai_conversation_policy).where(
    ai_conversation_policy.c.conversation_id == bindparam("cid"))
_USAGE = select(ai_usage.c.requests, ai_usage.c.tokens).where(
    ai_usage.c.user_id == bindparam("uid"), ai_usage.c.day == bindparam("day"))


def _take_request(conn: Connection, user_id: str, day: str, max_requests: int,
                  max_tokens: int) -> bool:
    u = ai_usage.c
    counted = conn.execute(
        update(ai_usage)
        .where(u.user_id == user_id, u.day == day, u.requests < max_requests,
               u.tokens < max_tokens)
        .values(requests=u.requests + 1))
    if _rowcount(counted):
        return True
    if conn.execute(select(u.requests).where(u.user_id == user_id, u.day == day)).first():
        return False  # at a limit
    conn.execute(insert(ai_usage).values(user_id=user_id, day=day, requests=1, tokens=0))
    return True


def _refund_request(conn: Connection, user_id: str, day: str) -> None:
    u = ai_usage.c
    conn.execute(update(ai_usage)
                 .where(u.user_id == user_id, u.day == day, u.requests > 0)
                 .values(requests=u.requests - 1))


def _record(conn: Connection, user_id: str, day: str, tokens: int,
            rows: list[dict[str, Any]]) -> None:
    if tokens > 0:
        u = ai_usage.c
        conn.execute(update(ai_usage).where(u.user_id == user_id, u.day == day)
                     .values(tokens=u.tokens + tokens))
    if rows:
        conn.execute(insert(ai_audit), rows)


def _rowcount(result: Any) -> int:
    # rowcount lives on CursorResult, which session.execute's type does not promise
    return int(getattr(result, "rowcount", 0) or 0)
