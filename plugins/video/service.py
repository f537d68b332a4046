"""Call logic: the server-side state machine. Never sees an HTTP request or a socket.

States: ``ringing`` → ``active`` (someone other than the initiator joined) → ``ended``
with a reason: ``completed``, ``missed`` (nobody answered before the ring timeout, or
the caller hung up while ringing), ``declined``, ``ended_by_host``, ``stale`` (the
server ended it: everybody's sockets vanished, or it outlived ``max_call_duration``).

Rules
-----
* One live call per conversation (a unique column; a second initiate → 409
  ``call_in_progress`` carrying the live call's id).
* A direct (1-1) call ends as soon as either side leaves or declines; a group call
  ends when its last joined participant leaves, or when every callee declined while
  it was still ringing. ``end`` on a group call takes the initiator or a conversation
  owner/admin (else 403 ``not_call_host``); on a direct call it is a hang-up.
* ``leave``, ``decline`` and ``end`` are idempotent: on a call that already ended, or
  for a participant already gone, they answer the call and change nothing.
* Every change of a call runs in one transaction that first bumps ``calls.version``
  where the call is still live (see :mod:`.models`); events are published after the
  commit, to each addressed user's topic (``user:<id>``) on every instance.

Audience: lifecycle events (``call.joined``, ``call.left``, ``call.ended``) reach every
participant of the call (each conversation member invited when it started, plus
anyone who joined later) who has not been removed from the conversation;
``call.ringing`` reaches the callees; ``call.state`` reaches the joined participants.

Why one file of ~580 lines: it is the state machine and nothing else (views, presence
SQL, the reaper's query, signaling and TURN live beside it); every transition above is
a method here, so the rules can be checked against the code in one read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from secureconnect.models import new_id, rfc3339
from secureconnect.ws.gateway import USER_TOPIC_PREFIX
from secureconnect_plugins.chat.api import CONVERSATIONS, MODERATOR_ROLES, Conversations

from .errors import CallEnded, CallFull, CallInProgress, CallNotFound, NotCallHost, NotInCall
from .membership import JoinedCache
from .metrics import VideoMetrics
from .models import call_participants as cp
from .models import calls, row_dict, utcnow
from .settings import VideoSettings
from .views import MEDIA_FIELDS, call_view, participant_view

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

#: how ended calls count in ``call_failures_total``
FAILURE_REASONS = frozenset({"missed", "declined", "stale"})


@dataclass
class Outbox:
    """Events and effects gathered inside a transaction, released after its commit."""

    events: list[tuple[list[str], str, dict[str, Any]]] = field(default_factory=list)
    ended: list[tuple[dict[str, Any], str, datetime]] = field(default_factory=list)
    ringing: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)

    def add(self, users: Iterable[str], event_type: str, data: dict[str, Any]) -> None:
        self.events.append((list(users), event_type, data))


class CallService:
    def __init__(self, kernel: Kernel, settings: VideoSettings) -> None:
        self.kernel = kernel
        self.settings = settings
        self.metrics = VideoMetrics.build(kernel.metrics)
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.joined = JoinedCache(kernel, self._load_joined, settings.membership_cache_ttl)

    @property
    def conversations(self) -> Conversations:
        return self.kernel.require(CONVERSATIONS)

    async def start(self) -> None:
        await self.joined.start()

    async def close(self) -> None:
        self._closed = True
        await self.joined.close()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- timers (this instance; the reaper is the backstop for every instance) -------
    def spawn(self, coro: Any) -> None:
        if self._closed:
            coro.close()
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("video: a timed call check failed", exc_info=task.exception())

    def schedule(self, key: tuple[str, str], delay: float, factory: Any) -> None:
        if self._closed:
            return
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()

        def fire() -> None:
            self._timers.pop(key, None)
            self.spawn(factory())

        self._timers[key] = asyncio.get_running_loop().call_later(max(0.0, delay), fire)

    def cancel_timer(self, key: tuple[str, str]) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    # -- reads ---------------------------------------------------------------------
    async def _call_row(self, call_id: str) -> dict[str, Any]:
        async with self.kernel.db.connect() as c:
            row = (await c.execute(select(calls).where(calls.c.id == call_id))).first()
        if row is None:
            raise CallNotFound("no such call")
        return row_dict(row)

    async def _authorize(self, call_id: str, user_id: str) -> tuple[dict[str, Any], str]:
        """The call (404 if unknown) and the user's conversation role (403 if none)."""
        call = await self._call_row(call_id)
        role = await self.conversations.require_participant(call["conversation_id"], user_id)
        return call, str(role)

    async def _view(self, call_id: str) -> dict[str, Any]:
        async with self.kernel.db.connect() as c:
            call = (await c.execute(select(calls).where(calls.c.id == call_id))).first()
            if call is None:
                raise CallNotFound("no such call")
            parts = (await c.execute(
                select(cp).where(cp.c.call_id == call_id).order_by(cp.c.joined_at, cp.c.user_id)
            )).all()
        return call_view(row_dict(call), [row_dict(p) for p in parts])

    async def get(self, user_id: str, call_id: str) -> dict[str, Any]:
        await self._authorize(call_id, user_id)
        return await self._view(call_id)

    async def active(self, user_id: str, conversation_id: str) -> dict[str, Any]:
        await self.conversations.require_participant(conversation_id, user_id)
        live = await self._live_call_id(conversation_id)
        if live is None:
            raise CallNotFound("no active call in this conversation")
        return await self._view(live)

    async def _live_call_id(self, conversation_id: str) -> str | None:
        async with self.kernel.db.connect() as c:
            found = await c.scalar(
                select(calls.c.id).where(calls.c.live_conversation_id == conversation_id)
            )
        return str(found) if found is not None else None

    async def joined_users(self, call_id: str, users: Sequence[str]) -> frozenset[str]:
        """Which of ``users`` are joined participants of the live call ``call_id``
        (through the instance's :class:`JoinedCache`). Raises 404 for an unknown call."""
        joined = await self.joined.get(call_id)
        if joined is None or not joined.issuperset(users):
            # A refusal is rare: confirm it with a fresh read, so someone who joined a
            # moment ago (on any instance) is never refused by a cached answer.
            self.joined.forget([call_id])
            joined = await self.joined.get(call_id)
        if joined is None:
            raise CallNotFound("no such call")
        return joined.intersection(users)

    async def _load_joined(self, call_id: str) -> frozenset[str] | None:
        async with self.kernel.db.connect() as c:
            rows = (await c.execute(
                select(cp.c.user_id, calls.c.status)
                .select_from(calls.outerjoin(
                    cp, and_(cp.c.call_id == calls.c.id, cp.c.status == "joined")))
                .where(calls.c.id == call_id)
            )).all()
        if not rows:
            return None
        if rows[0].status == "ended":
            return frozenset()
        return frozenset(str(r.user_id) for r in rows if r.user_id is not None)

    # -- transactions --------------------------------------------------------------
    async def _lock(self, s: AsyncSession, call_id: str) -> dict[str, Any] | None:
        """Serialise writers of a live call; the call's row, or ``None`` once ended."""
        bumped = await s.execute(
            update(calls)
            .where(calls.c.id == call_id, calls.c.status != "ended")
            .values(version=calls.c.version + 1)
        )
        if bumped.rowcount == 0:  # type: ignore[attr-defined]
            return None
        row = (await s.execute(select(calls).where(calls.c.id == call_id))).first()
        return row_dict(row) if row is not None else None

    async def _participants(self, s: AsyncSession, call_id: str) -> dict[str, dict[str, Any]]:
        rows = (await s.execute(select(cp).where(cp.c.call_id == call_id))).all()
        return {str(r.user_id): row_dict(r) for r in rows}

    @staticmethod
    def _audience(parts: dict[str, dict[str, Any]]) -> list[str]:
        return [u for u, p in parts.items() if not p["removed"]]

    async def _finish(self, s: AsyncSession, call: dict[str, Any], reason: str, now: datetime,
                      parts: dict[str, dict[str, Any]], out: Outbox) -> None:
        await s.execute(
            update(calls).where(calls.c.id == call["id"]).values(
                status="ended", end_reason=reason, ended_at=now, live_conversation_id=None)
        )
        await s.execute(
            update(cp).where(cp.c.call_id == call["id"], cp.c.status == "joined").values(
                status="left", left_at=now, left_reason="ended", gone_since=None)
        )
        await s.execute(
            update(cp).where(cp.c.call_id == call["id"], cp.c.status == "invited")
            .values(status="missed")
        )
        out.add(self._audience(parts), "call.ended", {
            "call_id": call["id"], "conversation_id": call["conversation_id"],
            "reason": reason, "ended_at": rfc3339(now)})
        out.ended.append((call, reason, now))

    async def _depart(self, s: AsyncSession, call: dict[str, Any], user_id: str, status: str,
                      reason: str, now: datetime, parts: dict[str, dict[str, Any]],
                      out: Outbox, *, removed: bool = False) -> None:
        """``user_id`` stops being in the call (left, declined, disconnected, removed);
        ends the call when the rules say so."""
        audience = self._audience(parts)
        values: dict[str, Any] = {"status": status, "left_reason": reason, "gone_since": None}
        if status == "left":
            values["left_at"] = now
        if removed:
            values["removed"] = True
        await s.execute(
            update(cp).where(cp.c.call_id == call["id"], cp.c.user_id == user_id).values(**values)
        )
        was = parts[user_id]["status"]
        parts[user_id] = {**parts[user_id], **values}
        out.add(audience, "call.left", {
            "call_id": call["id"], "conversation_id": call["conversation_id"],
            "user_id": user_id, "reason": reason})
        joined = [u for u, p in parts.items() if p["status"] == "joined"]
        invited = [u for u, p in parts.items() if p["status"] == "invited"]
        end: str | None = None
        server_ended = reason in ("disconnected",)
        if call["conversation_type"] == "direct":
            if call["status"] == "ringing":
                end = "missed" if user_id == call["initiator_id"] else "declined"
            else:
                end = "completed"
        elif not joined:
            end = "completed" if call["status"] == "active" else "missed"
        elif call["status"] == "ringing" and not invited and was == "invited" and (
                status == "declined"):
            end = "declined"
        if end is not None:
            if server_ended and end in ("completed", "missed"):
                end = "stale"
            await self._finish(s, call, end, now, parts, out)

    async def _release(self, out: Outbox) -> None:
        """Publish what a committed transaction decided; update metrics and timers."""
        for call, reason, now in out.ended:
            self.cancel_timer(("ring", call["id"]))
            if reason in FAILURE_REASONS:
                self.metrics.failures.labels(reason).inc()
            if call["answered_at"] is not None:
                self.metrics.duration.observe(
                    max(0.0, (now - call["answered_at"]).total_seconds()))
            log.info("call %s ended (%s)", call["id"], reason)
        await self.joined.changed({
            str(data["call_id"]) for _, kind, data in out.events if kind != "call.state"})
        # Posted one after another (each user sees a call's events in order, on every
        # instance); then the other instances' outcomes are awaited together.
        outcomes = [
            await self.kernel.ws.post(USER_TOPIC_PREFIX + u, event_type, data)
            for users, event_type, data in out.events for u in users
        ]
        if outcomes:
            await asyncio.gather(*outcomes)
        for call, callees in out.ringing:
            await self.kernel.notify("sc_call_ringing", call=call, callee_ids=callees)
        if out.ended:
            await self.sync_active_gauge()

    async def sync_active_gauge(self) -> None:
        async with self.kernel.db.connect() as c:
            live = await c.scalar(select(func.count()).select_from(calls).where(
                calls.c.status != "ended"))
        self.metrics.active.set(int(live or 0))

    # -- initiate ------------------------------------------------------------------
    async def initiate(self, user_id: str, conversation_id: str, call_type: str
                       ) -> dict[str, Any]:
        conversations = self.conversations
        await conversations.require_participant(conversation_id, user_id)
        info = await conversations.conversation(conversation_id)
        conversation_type = info.type if info is not None else "group"
        members = [p.user_id for p in await conversations.participants(conversation_id)]
        live = await self._live_call_id(conversation_id)
        if live is not None:
            raise self._in_progress(live)
        now = utcnow()
        call_id = new_id()
        call = {
            "id": call_id, "conversation_id": conversation_id,
            "live_conversation_id": conversation_id, "conversation_type": conversation_type,
            "initiator_id": user_id, "type": call_type, "status": "ringing",
            "end_reason": None, "created_at": now,
            "ring_deadline": now + timedelta(seconds=self.settings.ring_timeout),
            "answered_at": None, "ended_at": None, "version": 0,
        }
        callees = [m for m in members if m != user_id]
        rows = [self._participant_row(call_id, user_id, "joined", now, call_type)] + [
            self._participant_row(call_id, m, "invited", None, call_type) for m in callees
        ]
        try:
            async with self.kernel.db.session() as s:
                await s.execute(insert(calls).values(**call))
                await s.execute(insert(cp), rows)
        except IntegrityError:
            live = await self._live_call_id(conversation_id)
            if live is None:
                raise
            raise self._in_progress(live) from None
        self.metrics.calls.labels(call_type).inc()
        view = call_view(call, rows)
        out = Outbox()
        out.add(callees, "call.ringing", {"call_id": call_id, "call": view})
        out.ringing.append((view, callees))
        self.schedule(("ring", call_id), self.settings.ring_timeout,
                      lambda: self.expire_ringing(call_id))
        log.info("call %s (%s) started in conversation %s", call_id, call_type, conversation_id)
        await self._release(out)
        await self.sync_active_gauge()
        return view

    @staticmethod
    def _in_progress(call_id: str) -> CallInProgress:
        return CallInProgress("a call is already in progress in this conversation",
                              call_id=call_id)

    @staticmethod
    def _participant_row(call_id: str, user_id: str, status: str, now: datetime | None,
                         call_type: str) -> dict[str, Any]:
        return {
            "call_id": call_id, "user_id": user_id, "status": status, "left_reason": None,
            "removed": False, "joined_at": now, "left_at": None, "audio": True,
            "video": call_type == "video", "screen": False, "hand": False,
            "seen_at": now, "gone_since": None,
        }

    # -- join / leave / decline / end ------------------------------------------------
    async def join(self, user_id: str, call_id: str) -> dict[str, Any]:
        await self._authorize(call_id, user_id)
        out = Outbox()
        now = utcnow()
        async with self.kernel.db.session() as s:
            call = await self._lock(s, call_id)
            if call is None:
                raise CallEnded("the call has ended")
            parts = await self._participants(s, call_id)
            mine = parts.get(user_id)
            if mine is not None and mine["status"] == "joined":
                await s.execute(update(cp).where(
                    cp.c.call_id == call_id, cp.c.user_id == user_id
                ).values(seen_at=now, gone_since=None))
            else:
                joined = sum(1 for p in parts.values() if p["status"] == "joined")
                if joined >= self.settings.max_participants:
                    raise CallFull(
                        f"the call has its maximum of {self.settings.max_participants} "
                        "participants")
                row = self._participant_row(call_id, user_id, "joined", now, call["type"])
                if mine is None:
                    await s.execute(insert(cp).values(**row))
                else:
                    keep = {k: v for k, v in row.items() if k not in ("call_id", "user_id")}
                    await s.execute(update(cp).where(
                        cp.c.call_id == call_id, cp.c.user_id == user_id).values(**keep))
                parts[user_id] = row
                if call["status"] == "ringing":
                    await s.execute(update(calls).where(calls.c.id == call_id).values(
                        status="active", answered_at=now))
                out.add(self._audience(parts), "call.joined", {
                    "call_id": call_id, "conversation_id": call["conversation_id"],
                    "user_id": user_id, "participant": participant_view(row)})
        await self._release(out)
        return await self._view(call_id)

    async def leave(self, user_id: str, call_id: str) -> dict[str, Any]:
        await self._authorize(call_id, user_id)
        await self._leave_or_decline(user_id, call_id, decline=False)
        return await self._view(call_id)

    async def decline(self, user_id: str, call_id: str) -> dict[str, Any]:
        await self._authorize(call_id, user_id)
        await self._leave_or_decline(user_id, call_id, decline=True)
        return await self._view(call_id)

    async def _leave_or_decline(self, user_id: str, call_id: str, *, decline: bool) -> None:
        out = Outbox()
        now = utcnow()
        async with self.kernel.db.session() as s:
            call = await self._lock(s, call_id)
            if call is None:
                return  # ended: idempotent
            parts = await self._participants(s, call_id)
            mine = parts.get(user_id)
            if mine is None:
                return
            if mine["status"] == "joined":
                await self._depart(s, call, user_id, "left", "hangup", now, parts, out)
            elif mine["status"] == "invited" and decline:
                await self._depart(s, call, user_id, "declined", "declined", now, parts, out)
        await self._release(out)

    async def end(self, user_id: str, call_id: str) -> dict[str, Any]:
        call, role = await self._authorize(call_id, user_id)
        if call["status"] == "ended":
            return await self._view(call_id)
        if call["conversation_type"] == "direct":
            # a hang-up by either side ends a 1-1 call
            await self._leave_or_decline(user_id, call_id, decline=True)
            return await self._view(call_id)
        if user_id != call["initiator_id"] and role not in MODERATOR_ROLES:
            raise NotCallHost("only the caller or a conversation admin can end the call")
        out = Outbox()
        async with self.kernel.db.session() as s:
            locked = await self._lock(s, call_id)
            if locked is not None:
                parts = await self._participants(s, call_id)
                await self._finish(s, locked, "ended_by_host", utcnow(), parts, out)
        await self._release(out)
        return await self._view(call_id)

    # -- membership ------------------------------------------------------------------
    async def participant_removed(self, conversation_id: str, user_id: str) -> None:
        """The user left or was removed from the conversation: out of its live call."""
        out = Outbox()
        async with self.kernel.db.session() as s:
            live = await s.scalar(
                select(calls.c.id).where(calls.c.live_conversation_id == conversation_id))
            if live is None:
                return
            call = await self._lock(s, str(live))
            if call is None:
                return
            parts = await self._participants(s, call["id"])
            mine = parts.get(user_id)
            if mine is None:
                return
            if mine["status"] in ("joined", "invited"):
                status = "left" if mine["status"] == "joined" else "declined"
                await self._depart(s, call, user_id, status, "removed", utcnow(), parts, out,
                                   removed=True)
            else:
                await s.execute(update(cp).where(
                    cp.c.call_id == call["id"], cp.c.user_id == user_id).values(removed=True))
        await self._release(out)

    async def conversation_deleted(self, conversation_id: str) -> None:
        """The conversation is gone: its live call (if any is left) ends as ``stale``."""
        out = Outbox()
        async with self.kernel.db.session() as s:
            live = await s.scalar(
                select(calls.c.id).where(calls.c.live_conversation_id == conversation_id))
            call = await self._lock(s, str(live)) if live is not None else None
            if call is not None:
                parts = await self._participants(s, call["id"])
                await self._finish(s, call, "stale", utcnow(), parts, out)
        await self._release(out)

    # -- media state -----------------------------------------------------------------
    async def set_media(self, user_id: str, call_id: str, changes: dict[str, bool]
                        ) -> dict[str, Any]:
        """Update the sender's media flags and tell the joined participants."""
        async with self.kernel.db.session() as s:
            call = await self._lock(s, call_id)
            if call is None:
                raise CallEnded("the call has ended")
            parts = await self._participants(s, call_id)
            mine = parts.get(user_id)
            if mine is None or mine["status"] != "joined":
                raise NotInCall("join the call first")
            if changes:
                await s.execute(update(cp).where(
                    cp.c.call_id == call_id, cp.c.user_id == user_id).values(**changes))
            state = {k: bool(changes.get(k, mine[k])) for k in MEDIA_FIELDS}
            targets = [u for u, p in parts.items() if p["status"] == "joined"]
        event = {"call_id": call_id, "user_id": user_id, **state}
        out = Outbox()
        out.add(targets, "call.state", event)
        await self._release(out)
        return event

    # -- timed transitions (timers and the reaper) -----------------------------------
    async def expire_ringing(self, call_id: str) -> bool:
        """Past the ring timeout: a call still ringing ends as ``missed``; in a call
        that was answered, callees who never answered stop ringing. True if ended."""
        out = Outbox()
        now = utcnow()
        async with self.kernel.db.session() as s:
            call = await self._lock(s, call_id)
            if call is None or call["ring_deadline"] > now + timedelta(milliseconds=50):
                return False
            parts = await self._participants(s, call_id)
            if call["status"] == "ringing":
                await self._finish(s, call, "missed", now, parts, out)
            else:
                audience = self._audience(parts)
                for u, p in parts.items():
                    if p["status"] == "invited":
                        await s.execute(update(cp).where(
                            cp.c.call_id == call_id, cp.c.user_id == u).values(status="missed"))
                        out.add(audience, "call.left", {
                            "call_id": call_id, "conversation_id": call["conversation_id"],
                            "user_id": u, "reason": "missed"})
        await self._release(out)
        return bool(out.ended)

    async def expire_departed(self, call_id: str, now: datetime | None = None) -> bool:
        """Joined participants whose sockets are gone past the grace (or who have not
        been seen for ``stale_after``) leave; True when that ended the call."""
        out = Outbox()
        now = now or utcnow()
        grace_cut = now - timedelta(seconds=self.settings.reconnect_grace)
        seen_cut = now - timedelta(seconds=self.settings.stale_after)
        async with self.kernel.db.session() as s:
            call = await self._lock(s, call_id)
            if call is None:
                return False
            parts = await self._participants(s, call_id)
            gone = [
                u for u, p in parts.items() if p["status"] == "joined" and (
                    (p["gone_since"] is not None and p["gone_since"] <= grace_cut)
                    or p["seen_at"] is None or p["seen_at"] <= seen_cut)
            ]
            for u in gone:
                await self._depart(s, call, u, "left", "disconnected", now, parts, out)
                if out.ended:  # the call ended with it: everyone left
                    break
        await self._release(out)
        return bool(out.ended)

    async def expire_old(self, call_id: str) -> bool:
        out = Outbox()
        now = utcnow()
        async with self.kernel.db.session() as s:
            call = await self._lock(s, call_id)
            if call is None:
                return False
            limit = call["created_at"] + timedelta(seconds=self.settings.max_call_duration)
            if limit > now:
                return False
            await self._finish(s, call, "stale", now, await self._participants(s, call_id), out)
        await self._release(out)
        return True
