"""Messages: send, edit, delete, history and read receipts.

Send path (``send_message``), each step its own method: validate (type, sizes) →
membership (cached positive answers, see membership.py) → guard
(``sc_message_will_be_sent`` in plugin order, fail closed) → persist (seq allocated and
idempotency key claimed by the store in one group commit, in the conversation's send
line) → deliver (publish to
``conversation:<id>``; failures counted, never fail the send) → observe
(``sc_message_sent`` in an owned, bounded background task).

Contract: a message is durable before it is published; the conversation's line keeps
one instance's publishes in seq order; a retried idempotency key returns the stored
message and publishes nothing again. Never sees an HTTP request.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from secureconnect import Veto, hooks
from secureconnect.errors import Conflict, Problem
from secureconnect.ids import new_id_str
from secureconnect.models import utcnow

from .activity import ActivityRecorder
from .conversation_service import ConversationService
from .conversations import ConversationRepository, conversation_version
from .errors import ChatInvalid, MessageNotFound, MessageRejected, MessageTooLarge, NotTheSender
from .metrics import ChatMetrics
from .publisher import OwnedTasks, Publisher
from .sendline import OrderedLines, Ticket
from .settings import ChatSettings
from .store import InvalidCursor, MessageStore, NewMessage, StoredMessage

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

log = logging.getLogger(__name__)

#: how the gateway's encoder starts a chat.message frame (``type`` comes first)
_MESSAGE_FRAME = '{"type":"chat.message"'
CLIENT_MESSAGE_TYPES = frozenset({"text", "image", "video", "file"})
#: types only the server and plugins may post (``post_message``), never clients
PLUGIN_MESSAGE_TYPES = frozenset({*CLIENT_MESSAGE_TYPES, "system", "poll"})


@dataclass(frozen=True)
class Draft:
    """A message as a client (or plugin) asked for it; shape already checked."""

    content: str
    message_type: str = "text"
    is_encrypted: bool = False
    metadata: dict[str, Any] | None = None
    file_id: str | None = None


def _rewrite(message: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A guard's rewrite: only ``content`` (a string) and ``metadata`` are taken."""
    message = dict(message)
    if "content" in result:
        if not isinstance(result["content"], str):
            raise MessageRejected("a message guard rewrote content to a non-string")
        message["content"] = result["content"]
    if "metadata" in result:
        message["metadata"] = result["metadata"]
    return message


class MessageService:
    def __init__(
        self,
        kernel: Kernel,
        settings: ChatSettings,
        store: MessageStore,
        repo: ConversationRepository,
        metrics: ChatMetrics,
        *,
        conversations: ConversationService,
        publisher: Publisher,
        activity: ActivityRecorder,
        tasks: OwnedTasks,
    ) -> None:
        self.kernel = kernel
        self.settings = settings
        self.store = store
        self.repo = repo
        self.metrics = metrics
        self.conversations = conversations
        self.publisher = publisher
        self.activity = activity
        self.tasks = tasks
        # the send path's fixed-label series, bound once
        self._took = {step: metrics.delivery_duration.labels(step)
                      for step in ("guard", "persist", "publish")}
        self._persisted_ok = metrics.persisted.labels("success")
        self._created: dict[tuple[str, bool], Any] = {}
        # append → publish runs in the conversation's line, so this instance
        # publishes a conversation's messages in seq order
        self._ordering = OrderedLines()

    def _topic(self, conversation_id: str) -> str:
        return self.conversations.topic(conversation_id)

    async def send_message(
        self,
        sender_id: str,
        conversation_id: str,
        draft: Draft,
        *,
        idempotency_key: str | None = None,
        origin: str = "client",
        ticket: Ticket | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``(message, created)``; ``created`` is False when ``idempotency_key`` matched
        an earlier send (the original message comes back; nothing is published again).

        ``ticket`` is a place in the conversation's line taken when the request arrived
        (:meth:`reserve`), so that one client's pipelined sends keep their order; without
        one the place is taken now."""
        if ticket is None:
            ticket = self._ordering.reserve(str(conversation_id))
        try:
            return await self._send(sender_id, conversation_id, draft, idempotency_key,
                                    origin, ticket)
        finally:
            ticket.close()  # work that failed before its turn still lets the line move

    def reserve(self, conversation_id: str) -> Ticket:
        """Take the next place in a conversation's send line (synchronous)."""
        return self._ordering.reserve(str(conversation_id))

    async def _send(
        self,
        sender_id: str,
        conversation_id: str,
        draft: Draft,
        idempotency_key: str | None,
        origin: str,
        ticket: Ticket,
    ) -> tuple[dict[str, Any], bool]:
        started = time.perf_counter()
        sender_id, conversation_id = str(sender_id), str(conversation_id)
        await self._validate(sender_id, conversation_id, draft, origin)
        # The key is claimed in the group commit that stores the message (no look-up of
        # its own here): a retry goes through the guards again and the batch answers
        # with the message stored first. Only a refused retry looks the key up, so
        # that a send whose answer was lost still gets its message back.
        try:
            content, metadata = await self._guard_send(sender_id, conversation_id, draft,
                                                       origin)
        except Problem:
            if idempotency_key is not None:
                earlier = await self.store.find(conversation_id, sender_id, idempotency_key)
                if earlier is not None:
                    self.metrics.idempotency_hits.inc()
                    return earlier.as_dict(), False
            raise
        step = time.perf_counter()
        self._took["guard"].observe(step - started)
        new = NewMessage(
            id=new_id_str(),
            conversation_id=conversation_id,
            sender_id=sender_id,
            message_type=draft.message_type,
            content=content,
            is_encrypted=draft.is_encrypted,
            metadata=metadata,
            file_id=draft.file_id,
            created_at=utcnow(),
            idempotency_key=idempotency_key,
        )
        stored, created = await self._persist(new, ticket)
        # still this message's turn: the line moves on when send_message closes it
        if not created:
            self.metrics.idempotency_hits.inc()
            return stored.as_dict(), False
        now = time.perf_counter()
        self._took["persist"].observe(now - step)
        message = await self._deliver(stored, ticket)
        self._took["publish"].observe(time.perf_counter() - now)
        if idempotency_key is not None:
            self.metrics.idempotency_misses.inc()
        self._after_send(message)
        return message, True

    async def _validate(self, sender_id: str, conversation_id: str, draft: Draft,
                        origin: str) -> None:
        """Type allowed for the origin, sizes within limits, sender a participant."""
        allowed = CLIENT_MESSAGE_TYPES if origin == "client" else PLUGIN_MESSAGE_TYPES
        if draft.message_type not in allowed:
            raise ChatInvalid(
                f"message_type must be one of {', '.join(sorted(allowed))}, "
                f"got {draft.message_type!r}",
                code="invalid_message_type",
            )
        self._check_size(draft.message_type, draft.content, draft.metadata)
        await self.conversations.require_sender(conversation_id, sender_id)

    async def _guard_send(self, sender_id: str, conversation_id: str, draft: Draft,
                          origin: str) -> tuple[str, dict[str, Any] | None]:
        """The guards' verdict: the (possibly rewritten) content and metadata, sizes
        checked again after a rewrite."""
        content, metadata = await self._guard(
            {
                "conversation_id": conversation_id,
                "sender_id": sender_id,
                "message_type": draft.message_type,
                "content": draft.content,
                "is_encrypted": draft.is_encrypted,
                "metadata": draft.metadata,
                "file_id": draft.file_id,
                "origin": origin,
            }
        )
        if content != draft.content or metadata != draft.metadata:
            self._check_size(draft.message_type, content, metadata)
        return content, metadata

    async def _persist(self, new: NewMessage, ticket: Ticket) -> tuple[StoredMessage, bool]:
        """Store the message in its line's order; ``(stored, created)``. The
        conversation's read-cache version moves here as soon as the store is done, even
        when the sender was cancelled meanwhile (a stored message must never be missing
        from a cached page); other instances hear it in :meth:`_deliver`."""
        version = (conversation_version(new.conversation_id),)

        def stored_here(_: Any) -> None:
            self.kernel.read_cache.invalidate_local(version)

        try:
            if self.store.ordered_appends:
                # Appends submitted in line order get their seqs in that order: the next
                # message may be submitted before this one is stored (one group commit
                # holds several), and the results of a commit wake their senders in
                # that order, so each finds its turn to publish already come.
                await ticket.submit_turn()
                appended = self.store.submit(new)
                appended.add_done_callback(stored_here)
                ticket.submitted()
                # (cancelled by a timeout: the message is stored anyway, as it would be
                # by a send whose client went away)
                stored, created = await appended
                await ticket.turn()
            else:
                await ticket.turn()
                try:
                    stored, created = await self.store.append(new)
                finally:
                    stored_here(None)
        except Exception:
            self.metrics.persisted.labels("error").inc()
            raise
        return stored, created

    async def _deliver(self, stored: StoredMessage, ticket: Ticket) -> dict[str, Any]:
        """Publish a stored message to its conversation and count it; the line moves
        on once this instance's sockets have it (the bus keeps that order across
        instances)."""
        message = stored.as_dict()
        # before the event: an instance that hears of the message has the version moved
        await self.kernel.read_cache.invalidate(conversation_version(stored.conversation_id))
        await self.publisher.publish(self._topic(stored.conversation_id), "chat.message",
                                     message, posted=ticket.close)
        self._persisted_ok.inc()
        created_of = (stored.message_type, stored.is_encrypted)
        counter = self._created.get(created_of)
        if counter is None:  # message types x two: bounded
            counter = self._created[created_of] = self.metrics.created.labels(
                stored.message_type, "true" if stored.is_encrypted else "false")
        counter.inc()
        self.activity.note(
            stored.conversation_id,
            seq=stored.seq,
            at=stored.created_at,
            sender_id=stored.sender_id,
            message_id=stored.id,
        )
        return message

    async def edit_message(
        self,
        user_id: str,
        conversation_id: str,
        message_id: str,
        *,
        content: str,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        stored = await self._own_message(user_id, conversation_id, message_id)
        if stored.deleted:
            raise Conflict("a deleted message cannot be edited", code="message_deleted")
        self._check_size(stored.message_type, content, metadata)
        content, metadata = await self._guard(
            {
                "conversation_id": conversation_id,
                "sender_id": str(user_id),
                "message_type": stored.message_type,
                "content": content,
                "is_encrypted": stored.is_encrypted,
                "metadata": metadata,
                "file_id": stored.file_id,
                "origin": "edit",
                "message_id": stored.id,
            }
        )
        try:
            edited = await self.store.edit(
                conversation_id, message_id, content=content, metadata=metadata,
                edited_at=utcnow()
            )
        finally:
            await self.kernel.read_cache.invalidate(conversation_version(conversation_id))
        if edited is None:
            raise Conflict("a deleted message cannot be edited", code="message_deleted")
        message = edited.as_dict()
        await self.publisher.publish(self._topic(conversation_id), "chat.message_updated", message)
        return message

    async def delete_message(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> dict[str, Any]:
        await self._own_message(user_id, conversation_id, message_id)
        try:
            tombstone = await self.store.delete(conversation_id, message_id,
                                                deleted_at=utcnow())
        finally:
            await self.kernel.read_cache.invalidate(conversation_version(conversation_id))
        if tombstone is None:
            raise MessageNotFound("no such message in this conversation")
        message = tombstone.as_dict()
        await self.publisher.publish(self._topic(conversation_id), "chat.message_deleted", message)
        return message

    async def history(
        self, user_id: str, conversation_id: str, *, before: str | None, limit: int | None
    ) -> dict[str, Any]:
        await self.conversations.require_reader(conversation_id, user_id)
        return await self._history_page(conversation_id, before, self._history_limit(limit))

    async def history_rendered(
        self, user_id: str, conversation_id: str, *, before: str | None, limit: int | None,
        render: Callable[[dict[str, Any]], bytes],
    ) -> bytes:
        """``render(history(...))``. Membership is checked on every call (a cached "yes"
        moved by any change of the user's participations, a "no" never cached); the page
        comes from the read cache while the conversation's version stands still (every
        send, edit and delete moves it)."""
        conversation_id = str(conversation_id)
        await self.conversations.require_reader(conversation_id, user_id)
        limit = self._history_limit(limit)

        async def build() -> tuple[bytes, tuple[str]]:
            page = await self._history_page(conversation_id, before, limit)
            return render(page), (conversation_version(conversation_id),)

        body: bytes = await self.kernel.read_cache.fetch(
            ("chat.history", conversation_id, before, limit), build)
        return body

    def _history_limit(self, limit: int | None) -> int:
        return max(
            1, min(limit or self.settings.history_default_limit, self.settings.history_max_limit)
        )

    async def _history_page(self, conversation_id: str, before: str | None,
                            limit: int) -> dict[str, Any]:
        # a store that builds the client representation straight from its rows (the
        # SQL one) spares the message objects
        page_dicts = getattr(self.store, "page_dicts", None)
        try:
            if page_dicts is not None:
                found, cursor = await page_dicts(conversation_id, before=before, limit=limit)
                return {"messages": found, "next_cursor": cursor}
            page = await self.store.page(conversation_id, before=before, limit=limit)
        except InvalidCursor as exc:
            raise ChatInvalid(f"before: {exc}", code="invalid_cursor", status=400) from None
        return {"messages": [m.as_dict() for m in page.messages], "next_cursor": page.next_cursor}

    async def mark_read(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> dict[str, Any]:
        user_id = str(user_id)
        await self.conversations.require_participant(conversation_id, user_id)
        await self.activity.flush()
        stored = await self.store.get(conversation_id, message_id)
        if stored is None:
            raise MessageNotFound("no such message in this conversation")
        advanced = await self.repo.mark_read(
            conversation_id, user_id, seq=stored.seq, message_id=stored.id
        )
        receipt = {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "message_id": stored.id,
            "seq": stored.seq,
        }
        if advanced:
            await self.publisher.publish(self._topic(conversation_id), "chat.read", receipt)
        unread = await self.repo.unread_count(conversation_id, user_id)
        return {**receipt, "unread_count": unread}

    def _check_size(self, message_type: str, content: str, metadata: dict[str, Any] | None) -> None:
        limit = self.settings.max_content_bytes.get(message_type, 0)
        size = len(content.encode("utf-8"))
        if size > limit:
            raise MessageTooLarge(
                f"{message_type} content is {size} bytes; the limit is {limit} bytes "
                f"(chat.max_content_bytes.{message_type})",
                limit=limit,
            )
        if metadata is not None:
            meta_size = len(json.dumps(metadata, separators=(",", ":")).encode())
            if meta_size > self.settings.max_metadata_bytes:
                raise MessageTooLarge(
                    f"metadata is {meta_size} bytes as JSON; the limit is "
                    f"{self.settings.max_metadata_bytes} bytes (chat.max_metadata_bytes)",
                    code="metadata_too_large",
                    limit=self.settings.max_metadata_bytes,
                )

    async def _guard(self, message: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Run the ``sc_message_will_be_sent`` guards (kernel order, fail closed). A Veto
        (or a Problem raised) refuses with that status; any other exception refuses
        with 503 ``message_rejected``."""
        try:
            message = await hooks.guard(
                self.kernel, "sc_message_will_be_sent", message, arg="message",
                is_veto=lambda r: isinstance(r, Veto), rewrite=_rewrite,
            )
        except hooks.GuardRefused as refused:
            raise self._refusal(refused) from None
        return message["content"], message["metadata"]

    def _refusal(self, refused: hooks.GuardRefused) -> Problem:
        if isinstance(refused.error, Problem):
            self.metrics.rejected.labels("problem").inc()
            return refused.error
        if isinstance(refused.veto, Veto):
            self.metrics.rejected.labels("veto").inc()
            veto = refused.veto
            return Problem(veto.reason, code=veto.code, status=veto.status,
                           title="Message Rejected", plugin=refused.plugin)
        self.metrics.rejected.labels("guard_error").inc()
        return MessageRejected(
            f"a message guard (plugin '{refused.plugin}') failed, so the message "
            "was not sent; retry later"
        )

    def _after_send(self, message: dict[str, Any]) -> None:
        """``sc_message_sent`` off the send path; bounded: when too many are pending
        the observers are skipped for this message and that is logged."""
        if not self.kernel.hook_order("sc_message_sent"):
            return
        if len(self.tasks) >= self.settings.max_pending_notifications:
            log.warning(
                "sc_message_sent backlog full (%d); skipping message %s",
                len(self.tasks),
                message["id"],
            )
            return
        self.tasks.spawn(self._notify_sent(message))

    async def _notify_sent(self, message: dict[str, Any]) -> None:
        start = time.perf_counter()
        await self.kernel.notify("sc_message_sent", message=message)
        self.metrics.delivery_duration.labels("notify").observe(time.perf_counter() - start)

    async def _own_message(
        self, user_id: str, conversation_id: str, message_id: str
    ) -> StoredMessage:
        await self.conversations.require_participant(conversation_id, user_id)
        stored = await self.store.get(conversation_id, message_id)
        if stored is None:
            raise MessageNotFound("no such message in this conversation")
        if stored.sender_id != str(user_id):
            raise NotTheSender("only the sender edits or deletes a message")
        return stored

    def _count_dropped(self, _conn: Any, frames: list[str]) -> None:
        """A slow consumer's queue was dropped: count the chat messages in it (the
        client gets ``resync`` and re-reads history)."""
        lost = sum(1 for f in frames if f.startswith(_MESSAGE_FRAME))
        if lost:
            self.metrics.client_dropped.inc(lost)
