"""The durable outbox in SQL: events (one ``push_pending`` row per message, claimed and
expanded into outbox rows in one transaction), enqueue, claim, finish, reschedule,
dead-letter.

Claiming (the "never twice at once" rule): one ``UPDATE push_outbox SET claim_token =
:fresh, claim_until = now + lease WHERE id IN (<due, unclaimed ids>) AND (claim_until
IS NULL OR claim_until < now)``. The repeated condition is re-checked on the locked row
(PostgreSQL re-evaluates it after a concurrent update; SQLite has one writer), so of two
instances racing for a row only one sets its token; the other's ``SELECT ... WHERE
claim_token = :mine`` does not see it. PostgreSQL also skips rows locked by another
claimer (``FOR UPDATE SKIP LOCKED``). Every later change is conditional on the claim
token, so a worker whose lease ran out cannot finish a row someone else re-claimed.

Delivery is at-least-once only across a crash between the provider's acceptance and
the ``DELETE`` (a lease expiring after the provider accepted); the collapse key makes
such a repeat replace, not add, a notification on the device.

Every write is one ``kernel.db.write`` call (a whole transaction in one hop; on SQLite
on the database's one writer thread, in line with chat's writes, so no lock is held
across event-loop turns).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from secureconnect.kernel import Kernel
from secureconnect.models import new_id, utcnow

from .models import dead_letters, devices, outbox, pending
from .providers.base import Delivery


@dataclass(frozen=True)
class Claimed:
    row: dict[str, Any]
    delivery: Delivery | None  # None: the device is gone or changed owner
    claim_token: str


class Outbox:
    def __init__(self, kernel: Kernel, *, lease: float, ttl: int) -> None:
        self.kernel = kernel
        self.lease = timedelta(seconds=lease)
        self.ttl = ttl

    async def add(self, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        now = utcnow()
        encoded: dict[int, str] = {}  # the devices of one recipient share a payload

        def dumps(payload: dict[str, Any]) -> str:
            key = id(payload)
            if key not in encoded:
                encoded[key] = json.dumps(payload)
            return encoded[key]

        rows = [self._row(i, dumps(i["payload"]), now) for i in items]

        def run(conn: Connection) -> None:
            conn.execute(insert(outbox), rows)

        await self.kernel.db.write(run)

    async def depth(self) -> int:
        """Everything not yet delivered: outbox rows plus events not yet expanded."""
        async with self.kernel.db.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(outbox))).scalar_one()
            events = (await conn.execute(select(func.count()).select_from(pending))).scalar_one()
            return int(rows) + int(events)

    # -- events: one row per message / call ring, expanded by the workers --------------
    async def add_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """``(kind, body)`` pairs, one multi-row insert in one transaction."""
        if not events:
            return
        now = utcnow()
        rows = [{"id": new_id(), "kind": kind, "body": json.dumps(body),
                 "claim_token": None, "claim_until": None, "created_at": now}
                for kind, body in events]

        def run(conn: Connection) -> None:
            conn.execute(insert(pending), rows)

        await self.kernel.db.write(run)

    async def claim_events(self, limit: int, token: str) -> list[dict[str, Any]]:
        """Claim up to ``limit`` unexpanded events (oldest first) under ``token``, with
        the outbox rows' lease rule; each as ``{"id", "kind", "body"}``."""
        now = utcnow()
        free = or_(pending.c.claim_until.is_(None), pending.c.claim_until < now)
        due = select(pending.c.id).where(free).order_by(pending.c.created_at).limit(limit)
        if not self.kernel.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)

        def run(conn: Connection) -> list[dict[str, Any]]:
            result = conn.execute(
                update(pending).where(pending.c.id.in_(due.scalar_subquery()), free)
                .values(claim_token=token, claim_until=now + self.lease))
            if not result.rowcount:
                return []
            return [{"id": r.id, "kind": r.kind, "body": json.loads(r.body)}
                    for r in conn.execute(select(pending).where(pending.c.claim_token == token)
                                          .order_by(pending.c.created_at))]

        return await self.kernel.db.write(run)

    async def expand(self, token: str, event_ids: list[str],
                     items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Replace claimed events by their outbox rows, in one transaction: the events
        still held under ``token`` are deleted and only their items inserted, so an
        event is expanded exactly once even if its lease ran out meanwhile. Items carry
        the ``event_id`` they come from. The items inserted."""
        if not event_ids:
            return []
        now = utcnow()
        encoded: dict[int, str] = {}

        def dumps(payload: dict[str, Any]) -> str:
            key = id(payload)
            if key not in encoded:
                encoded[key] = json.dumps(payload)
            return encoded[key]

        def run(conn: Connection) -> list[dict[str, Any]]:
            gone = {r.id for r in conn.execute(
                delete(pending).where(pending.c.id.in_(event_ids),
                                      pending.c.claim_token == token)
                .returning(pending.c.id))}
            kept = [i for i in items if i["event_id"] in gone]
            if kept:
                conn.execute(insert(outbox), [self._row(i, dumps(i["payload"]), now)
                                              for i in kept])
            return kept

        return await self.kernel.db.write(run)

    @staticmethod
    def _row(i: dict[str, Any], payload: str, now: datetime) -> dict[str, Any]:
        return {"id": new_id(), "device_id": i["device_id"], "user_id": i["user_id"],
                "provider": i["provider"], "payload": payload,
                "collapse_key": i.get("collapse_key"), "priority": i.get("priority", "high"),
                "attempts": 0, "last_error": None, "next_attempt_at": now,
                "claim_token": None, "claim_until": None, "created_at": now}

    @staticmethod
    def new_claim_token() -> str:
        return str(uuid.uuid4())

    async def claim(self, limit: int, token: str) -> list[Claimed]:
        """Claim up to ``limit`` due rows under ``token`` (made by the caller first, so
        a caller cancelled mid-claim still knows which rows to give back)."""
        now = utcnow()
        free = or_(outbox.c.claim_until.is_(None), outbox.c.claim_until < now)
        due = (select(outbox.c.id).where(outbox.c.next_attempt_at <= now, free)
               .order_by(outbox.c.next_attempt_at).limit(limit))
        if not self.kernel.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)

        def run(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            result = conn.execute(
                update(outbox).where(outbox.c.id.in_(due.scalar_subquery()), free)
                .values(claim_token=token, claim_until=now + self.lease))
            if not result.rowcount:
                return [], {}
            rows = [dict(r._mapping) for r in conn.execute(
                select(outbox).where(outbox.c.claim_token == token))]
            device_ids = {r["device_id"] for r in rows}
            found = {d.id: d for d in conn.execute(
                select(devices).where(devices.c.id.in_(device_ids)))}
            return rows, found

        rows, found = await self.kernel.db.write(run)
        out = []
        for row in rows:
            dev = found.get(row["device_id"])
            delivery = None
            if dev is not None and dev.user_id == row["user_id"]:
                delivery = Delivery(
                    outbox_id=row["id"], device_id=dev.id, user_id=dev.user_id,
                    platform=dev.platform, token=dev.token, app_id=dev.app_id,
                    payload=json.loads(row["payload"]), collapse_key=row["collapse_key"],
                    priority=row["priority"], ttl=self.ttl)
            out.append(Claimed(row, delivery, token))
        return out

    async def done(self, c: Claimed) -> bool:
        """Delete a sent (or dropped) row; False when the claim was lost meanwhile."""
        return c.row["id"] in await self.done_many([c])

    async def done_many(self, claimed: list[Claimed]) -> set[str]:
        """Delete many sent rows in one statement; the ids actually deleted (rows whose
        claim was lost meanwhile are left alone)."""
        if not claimed:
            return set()
        ids = [c.row["id"] for c in claimed]
        tokens = {c.claim_token for c in claimed}

        def run(conn: Connection) -> set[str]:
            result = conn.execute(
                delete(outbox).where(outbox.c.id.in_(ids), outbox.c.claim_token.in_(tokens))
                .returning(outbox.c.id))
            return {r.id for r in result}

        return await self.kernel.db.write(run)

    async def reschedule(self, c: Claimed, at: datetime, error: str, *,
                         count_attempt: bool = True) -> None:
        values: dict[str, Any] = {"next_attempt_at": at, "claim_token": None,
                                  "claim_until": None, "last_error": error[:255]}
        if count_attempt:
            values["attempts"] = outbox.c.attempts + 1

        def run(conn: Connection) -> None:
            conn.execute(update(outbox).where(
                outbox.c.id == c.row["id"], outbox.c.claim_token == c.claim_token)
                .values(**values))

        await self.kernel.db.write(run)

    async def release(self, tokens: set[str]) -> None:
        """Give claimed rows back (shutting down): another worker takes them at once."""
        if not tokens:
            return

        def run(conn: Connection) -> None:
            for table in (outbox, pending):
                conn.execute(update(table).where(table.c.claim_token.in_(tokens))
                             .values(claim_token=None, claim_until=None))

        await self.kernel.db.write(run)

    async def dead_letter(self, c: Claimed, error: str) -> None:
        row = c.row

        def run(conn: Connection) -> None:
            gone = conn.execute(delete(outbox).where(
                outbox.c.id == row["id"], outbox.c.claim_token == c.claim_token))
            if not gone.rowcount:
                return
            conn.execute(insert(dead_letters).values(
                id=row["id"], device_id=row["device_id"], user_id=row["user_id"],
                provider=row["provider"], payload=row["payload"],
                collapse_key=row["collapse_key"], priority=row["priority"],
                attempts=int(row["attempts"]) + 1, last_error=error[:255],
                created_at=row["created_at"], failed_at=utcnow()))

        await self.kernel.db.write(run)

    async def drop_device(self, device_id: str) -> None:
        """The token is dead: delete the device and everything queued for it."""

        def run(conn: Connection) -> None:
            conn.execute(delete(devices).where(devices.c.id == device_id))
            conn.execute(delete(outbox).where(outbox.c.device_id == device_id))

        await self.kernel.db.write(run)

    # -- dead letters (CLI, admin console) -----------------------------------------------
    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.kernel.db.connect() as conn:
            rows = await conn.execute(select(dead_letters)
                                      .order_by(dead_letters.c.failed_at.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]

    async def drop_dead_letter(self, dead_letter_id: str) -> bool:
        """Delete one dead letter for good (the admin console's "Drop")."""

        def run(conn: Connection) -> bool:
            done = conn.execute(delete(dead_letters).where(dead_letters.c.id == dead_letter_id))
            return bool(done.rowcount)

        return await self.kernel.db.write(run)

    async def retry_dead_letters(self, ids: list[str] | None = None) -> int:
        """Move dead letters (all, or ``ids``) back into the outbox with fresh attempts."""
        now = utcnow()

        def run(conn: Connection) -> int:
            query = select(dead_letters)
            if ids:
                query = query.where(dead_letters.c.id.in_(ids))
            rows = [dict(r._mapping) for r in conn.execute(query)]
            if not rows:
                return 0
            conn.execute(insert(outbox), [{
                "id": r["id"], "device_id": r["device_id"], "user_id": r["user_id"],
                "provider": r["provider"], "payload": r["payload"],
                "collapse_key": r["collapse_key"], "priority": r["priority"], "attempts": 0,
                "last_error": None, "next_attempt_at": now, "claim_token": None,
                "claim_until": None, "created_at": now} for r in rows])
            conn.execute(delete(dead_letters).where(
                dead_letters.c.id.in_([r["id"] for r in rows])))
            return len(rows)

        return await self.kernel.db.write(run)
