"""Push logic: devices, mutes, and who gets a notification. Never sees an HTTP request.

Membership and presence come from chat's interface (``kernel.require(CONVERSATIONS)``).

Send path (issue 17, "never slows or fails a send"): :meth:`PushService.message_sent`
only puts the message on a bounded in-memory queue (full → skipped and counted as
``push_failed_total{provider="-",reason="backlog"}``); one owned task writes what queued
in 50 ms as ``push_pending`` rows, one per message, with one insert and no look-up.
From that row on, nothing is lost (:mod:`.dispatcher` expands and delivers).

Recipients of a message (:meth:`PushService.expand`, run by a delivering instance's
worker): every participant except the sender, with a device, that has not muted the
conversation and has no live socket on any instance. One outbox row per device;
collapse key ``conv:<id>``; ``badge`` = the recipient's unread count there.
Encrypted messages never put content in a payload; plaintext previews only when
``push.preview = "content"`` (docs/push.md "Payloads").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from secureconnect.errors import NotFound
from secureconnect.models import new_id, utcnow
from secureconnect_plugins.chat.api import CONVERSATIONS, Conversations

from .devices import normalise
from .dispatcher import Dispatcher
from .metrics import PushMetrics
from .models import devices, mutes, outbox
from .outbox import Outbox
from .settings import PushSettings

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

#: message types that never notify (timeline noise posted by plugins)
SILENT_TYPES = frozenset({"system"})
#: queued messages written as ``push_pending`` rows by one insert
ENQUEUE_BATCH = 500
#: marks a queued call ring (the queue holds chat messages and call rings)
CALL_KEY = "__call__"
#: seconds the enqueuer waits after a message for others to batch with it
ENQUEUE_COALESCE = 0.05


class DeviceNotFound(NotFound):
    code = "push_device_not_found"


@dataclass(frozen=True)
class NewDevice:
    platform: str
    token: Any
    app_id: str | None = None
    locale: str | None = None


def device_view(row: Any) -> dict[str, Any]:
    r = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
    return {"id": r["id"], "platform": r["platform"], "app_id": r["app_id"],
            "locale": r["locale"], "created_at": r["created_at"],
            "updated_at": r["updated_at"]}


class PushService:
    def __init__(self, kernel: Kernel, settings: PushSettings, outbox: Outbox,
                 dispatcher: Dispatcher, metrics: PushMetrics) -> None:
        self.kernel = kernel
        self.settings = settings
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.metrics = metrics
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(settings.enqueue_queue)
        self._task: asyncio.Task[None] | None = None
        self._enqueue_error_at = 0.0
        dispatcher.expander = self.expand

    @property
    def conversations(self) -> Conversations:
        return self.kernel.require(CONVERSATIONS)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._enqueue_loop(),
                                                            name="push.enqueue")

    async def close(self, drain: float = 2.0) -> None:
        """Turn what is queued into outbox rows (for at most ``drain`` seconds), stop."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(drain):
                await self._queue.join()
        except TimeoutError:
            log.warning("push: %d message(s) not enqueued at shutdown", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    # -- devices -------------------------------------------------------------------------
    async def register(self, user_id: str, session_id: str | None,
                       new: NewDevice) -> dict[str, Any]:
        s = self.settings
        token, token_hash = normalise(new.platform, new.token,
                                      webhook_hosts=s.webhook_allowed_hosts,
                                      webpush_hosts=tuple(s.webpush.get("allowed_hosts", ())))
        now = utcnow()
        values = {"user_id": user_id, "platform": new.platform, "token": token,
                  "app_id": new.app_id, "locale": new.locale, "session_id": session_id,
                  "updated_at": now}
        limit = self.settings.max_devices_per_user

        def run(conn: Connection) -> Any:
            # one token, one owner: an existing registration moves to this user
            moved = conn.execute(update(devices).where(devices.c.token_hash == token_hash)
                                 .values(**values))
            if not moved.rowcount:
                conn.execute(insert(devices).values(
                    id=new_id(), token_hash=token_hash, created_at=now, **values))
            row = conn.execute(select(devices).where(devices.c.token_hash == token_hash)).one()
            ids = [r.id for r in conn.execute(
                select(devices.c.id).where(devices.c.user_id == user_id)
                .order_by(devices.c.updated_at.desc(), devices.c.id.desc()))]
            if ids[limit:]:  # over the limit: the least recently registered go
                conn.execute(delete(devices).where(devices.c.id.in_(ids[limit:])))
            return row

        for _ in range(3):
            try:
                return device_view(await self.kernel.db.write(run))
            except IntegrityError:
                continue  # a concurrent registration of the same token: update it
        raise RuntimeError("device registration kept conflicting")

    async def devices_of(self, user_id: str) -> list[dict[str, Any]]:
        async with self.kernel.db.connect() as conn:
            rows = await conn.execute(select(devices).where(devices.c.user_id == user_id)
                                      .order_by(devices.c.created_at))
            return [device_view(r) for r in rows]

    async def remove(self, user_id: str, device_id: str) -> None:
        def run(conn: Connection) -> int:
            return int(conn.execute(delete(devices).where(
                devices.c.id == device_id, devices.c.user_id == user_id)).rowcount or 0)

        if not await self.kernel.db.write(run):
            raise DeviceNotFound("no such device")

    async def remove_session_devices(self, session_ids: list[str]) -> int:
        """Devices registered with these (revoked) auth sessions are removed."""
        if not session_ids:
            return 0
        def run(conn: Connection) -> int:
            return int(conn.execute(delete(devices).where(
                devices.c.session_id.in_(session_ids))).rowcount or 0)

        return await self.kernel.db.write(run)

    async def forget_user(self, user_id: str) -> None:
        """An account was deleted: its devices, mutes and queued notifications go."""
        def run(conn: Connection) -> None:
            conn.execute(delete(devices).where(devices.c.user_id == user_id))
            conn.execute(delete(mutes).where(mutes.c.user_id == user_id))
            conn.execute(delete(outbox).where(outbox.c.user_id == user_id))

        await self.kernel.db.write(run)

    async def send_test(self, user_id: str) -> int:
        async with self.kernel.db.connect() as conn:
            rows = list(await conn.execute(select(devices).where(devices.c.user_id == user_id)))
        items = [{"device_id": d.id, "user_id": user_id,
                  "provider": self.settings.provider_for(d.platform),
                  "payload": {"type": "test", "id": new_id()}, "priority": "high"}
                 for d in rows]
        await self.outbox.add(items)
        self.dispatcher.wake()
        return len(items)

    # -- mutes -----------------------------------------------------------------------------
    async def set_mute(self, user_id: str, conversation_id: str,
                       muted_until: datetime | None) -> dict[str, Any]:
        await self.conversations.require_participant(conversation_id, user_id)
        if muted_until is not None and muted_until <= utcnow():
            muted_until = None

        def run(conn: Connection) -> None:
            conn.execute(delete(mutes).where(mutes.c.user_id == user_id,
                                             mutes.c.conversation_id == conversation_id))
            if muted_until is not None:
                conn.execute(insert(mutes).values(
                    user_id=user_id, conversation_id=conversation_id, muted_until=muted_until))

        await self.kernel.db.write(run)
        return {"conversation_id": conversation_id, "muted_until": muted_until}

    async def forget_conversation(self, conversation_id: str) -> None:
        def run(conn: Connection) -> None:
            conn.execute(delete(mutes).where(mutes.c.conversation_id == conversation_id))

        await self.kernel.db.write(run)

    async def forget_member(self, conversation_id: str, user_id: str) -> None:
        def run(conn: Connection) -> None:
            conn.execute(delete(mutes).where(mutes.c.conversation_id == conversation_id,
                                             mutes.c.user_id == user_id))

        await self.kernel.db.write(run)

    # -- messages → outbox -------------------------------------------------------------------
    def message_sent(self, message: dict[str, Any]) -> None:
        """Called by chat's ``sc_message_sent``: queue only, never wait."""
        self.dispatcher.chat_sent()
        if message.get("message_type") in SILENT_TYPES:
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.metrics.failed.labels("-", "backlog").inc()
            log.warning("push: enqueue backlog full; no push for message %s", message.get("id"))

    def call_ringing(self, call: dict[str, Any], callee_ids: list[str]) -> None:
        """Called by video's ``sc_call_ringing``: queue only, never wait."""
        try:
            self._queue.put_nowait({CALL_KEY: call, "callee_ids": list(callee_ids)})
        except asyncio.QueueFull:
            self.metrics.failed.labels("-", "backlog").inc()
            log.warning("push: enqueue backlog full; no push for call %s", call.get("id"))

    async def _enqueue_loop(self) -> None:
        """Queued messages → ``push_pending`` rows, a group commit: after a first
        message, wait ``ENQUEUE_COALESCE`` s for more, then write up to
        ``ENQUEUE_BATCH`` events with one insert — one row per message or ring, no
        look-up (recipients, mutes, presence, devices are the worker's job)."""
        while True:
            batch = [await self._queue.get()]
            try:
                await asyncio.sleep(ENQUEUE_COALESCE)
                while len(batch) < ENQUEUE_BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._add_events([self.event(m) for m in batch])
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.failed.labels("-", "enqueue_error").inc(len(batch))
                self._log_enqueue_error(len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _log_enqueue_error(self, n: int) -> None:
        """Once with the traceback, then one line a minute (the database may be down for
        a while; the counter tells how many were lost)."""
        now = time.monotonic()
        if not self._enqueue_error_at:
            log.exception("push: could not enqueue notifications of %d message(s)", n)
        elif now - self._enqueue_error_at >= 60:
            log.warning("push: still failing to enqueue notifications (%d message(s) now)",
                        n)
        else:
            return
        self._enqueue_error_at = now

    def event(self, queued: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The ``push_pending`` row of a queued message or ring: what the payload needs
        and nothing more (content only when a preview may show it)."""
        if CALL_KEY in queued:
            return "call", {"call": queued[CALL_KEY], "callee_ids": queued["callee_ids"]}
        m = queued
        body: dict[str, Any] = {
            "id": str(m["id"]), "conversation_id": str(m["conversation_id"]),
            "sender_id": str(m["sender_id"]), "seq": m.get("seq"),
            "is_encrypted": bool(m.get("is_encrypted")),
            "message_type": m.get("message_type")}
        content = m.get("content")
        if (self.settings.preview == "content" and not body["is_encrypted"]
                and body["message_type"] == "text" and isinstance(content, str)):
            body["content"] = content[: self.settings.preview_max_chars]
        return "message", body

    async def _add_events(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        await self.dispatcher.refresh_depth()  # (an instance with deliver = false too)
        if self.dispatcher.depth + len(events) > self.settings.max_outbox:
            self.metrics.failed.labels("-", "outbox_full").inc(len(events))
            log.warning("push: outbox full (%d); no push for %d event(s)",
                        self.dispatcher.depth, len(events))
            return
        await self.outbox.add_events(events)
        self.dispatcher.depth += len(events)
        self._enqueue_error_at = 0.0
        self.dispatcher.wake()

    async def expand(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The outbox items of claimed events (the worker's side of the send path),
        each tagged with its ``event_id``."""
        messages = [dict(e["body"], event_id=e["id"]) for e in events if e["kind"] == "message"]
        items = await self.items_for(messages)
        for e in events:
            if e["kind"] == "call":
                for item in await self.call_items(e["body"]["call"], e["body"]["callee_ids"]):
                    items.append(dict(item, event_id=e["id"]))
        return items

    async def enqueue_message(self, message: dict[str, Any]) -> int:
        """Enqueue one message's notifications at once (no event row): tests, tools."""
        items = await self.items_for([message])
        await self._add(items, [message])
        return len(items)

    async def _add(self, items: list[dict[str, Any]], messages: list[dict[str, Any]]) -> None:
        if not items:
            return
        await self.dispatcher.refresh_depth()
        if self.dispatcher.depth + len(items) > self.settings.max_outbox:
            self.metrics.failed.labels("-", "outbox_full").inc(len(items))
            log.warning("push: outbox full (%d); %d notification(s) of %d message(s) skipped",
                        self.dispatcher.depth, len(items), len(messages))
            return
        await self.outbox.add(items)
        self.dispatcher.depth += len(items)
        self.count_enqueued(items)
        self.dispatcher.wake()

    def count_enqueued(self, items: list[dict[str, Any]]) -> None:
        per_provider = Counter(i["provider"] for i in items)
        for provider, n in per_provider.items():
            self.metrics.notifications.labels(provider, "enqueued").inc(n)

    async def items_for(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One outbox item per (message, device of each recipient to notify)."""
        by_conversation: dict[str, list[dict[str, Any]]] = {}
        for m in messages:
            by_conversation.setdefault(str(m["conversation_id"]), []).append(m)
        items: list[dict[str, Any]] = []
        for conversation_id, sent in by_conversation.items():
            items += await self._conversation_items(conversation_id, sent)
        return items

    async def _conversation_items(self, conversation_id: str,
                                  messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        conversations = self.conversations
        participants = await conversations.participants(conversation_id)
        members = [p.user_id for p in participants][: self.settings.max_recipients]
        senders = {str(m["sender_id"]) for m in messages}
        candidates = [u for u in members if u not in senders or len(senders) > 1]
        if not candidates:
            return []
        now = utcnow()
        async with self.kernel.db.connect() as conn:
            muted = {r.user_id for r in await conn.execute(select(mutes.c.user_id).where(
                mutes.c.conversation_id == conversation_id, mutes.c.user_id.in_(candidates),
                mutes.c.muted_until > now))}
            wanted = [u for u in candidates if u not in muted]
            rows = list(await conn.execute(select(devices).where(devices.c.user_id.in_(wanted))))
        by_user: dict[str, list[Any]] = {}
        for d in rows:
            by_user.setdefault(d.user_id, []).append(d)
        items: list[dict[str, Any]] = []
        for user_id, devs in by_user.items():
            if await conversations.is_online(user_id):
                continue
            # the unread count as of this batch: the badge the device should show now
            badge = await conversations.unread_count(conversation_id, user_id)
            for message in messages:
                if str(message["sender_id"]) == user_id:
                    continue  # never notify the sender
                payload = self.payload(message, badge)
                items += [{"device_id": d.id, "user_id": user_id,
                           "provider": self.settings.provider_for(d.platform),
                           "payload": payload, "collapse_key": f"conv:{conversation_id}",
                           "priority": "high", "event_id": message.get("event_id")}
                          for d in devs]
        return items

    async def call_items(self, call: dict[str, Any],
                         callee_ids: list[str]) -> list[dict[str, Any]]:
        """One high-priority ``call`` notification per device of each ringing callee
        without a live socket (collapse key ``call:<id>``; no content to hide)."""
        conversations = self.conversations
        if not callee_ids:
            return []
        async with self.kernel.db.connect() as conn:
            rows = list(await conn.execute(select(devices).where(
                devices.c.user_id.in_(callee_ids[: self.settings.max_recipients]))))
        payload = {"type": "call", "call_id": str(call["id"]),
                   "conversation_id": str(call["conversation_id"]),
                   "call_type": call.get("type"), "caller_id": call.get("initiator_id"),
                   "ring_expires_at": call.get("ring_expires_at")}
        online: dict[str, bool] = {}
        items = []
        for d in rows:
            if d.user_id not in online:
                online[d.user_id] = await conversations.is_online(d.user_id)
            if online[d.user_id]:
                continue
            items.append({"device_id": d.id, "user_id": d.user_id,
                          "provider": self.settings.provider_for(d.platform),
                          "payload": payload, "collapse_key": f"call:{call['id']}",
                          "priority": "high"})
        return items

    def payload(self, message: dict[str, Any], badge: int) -> dict[str, Any]:
        """The notification: ids only, plus a preview when policy and message allow."""
        body: dict[str, Any] = {
            "type": "message",
            "conversation_id": str(message["conversation_id"]),
            "message_id": str(message["id"]),
            "sender_id": str(message["sender_id"]),
            "seq": message.get("seq"),
            "badge": int(badge),
            "encrypted": bool(message.get("is_encrypted")),
        }
        content = message.get("content")
        if (self.settings.preview == "content" and not message.get("is_encrypted")
                and message.get("message_type") == "text" and isinstance(content, str)):
            body["body"] = content[: self.settings.preview_max_chars]
        return body
