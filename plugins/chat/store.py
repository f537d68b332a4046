"""Where messages live: the :class:`MessageStore` interface and its SQL implementation.

The service talks to messages only through this interface, so another engine (the
Cassandra store of a later issue) can replace the SQL one without touching the
service. The contract, for every implementation:

* ``append`` allocates the conversation's next ``seq`` (1, 2, 3, ... — gap-free and
  strictly increasing per conversation, also under concurrent writers) and stores the
  message atomically with it. With an ``idempotency_key`` it is idempotent per
  ``(conversation_id, sender_id, idempotency_key)``: a retry — also a concurrent one —
  gets back the message stored first and ``created=False``; no seq is consumed.
* ``get`` / ``edit`` / ``delete`` address one message of one conversation; ``delete``
  leaves a tombstone (same id and seq, ``content`` and ``metadata`` cleared,
  ``deleted_at`` set) so clients keep a gap-free timeline.
* ``page`` returns messages newest first, ``limit`` at most, older than an **opaque**
  cursor the store produced itself (``next_cursor``, ``None`` at the start of the
  history). A cursor the store cannot read raises :class:`InvalidCursor`.
* Read receipts need only ``get`` (the receipt stores the message's ``seq`` with the
  participant, which is relational data the conversation repository owns).

The value types and the cursor live in :mod:`.message_values` (re-exported here), the SQL
engine's statements, row conversions and group-commit batch in :mod:`.sql_batch`; this
module keeps the contract beside the SQL engine that keeps its invariants.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    insert,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .api import MessageText
from .message_values import (
    InvalidCursor,
    NewMessage,
    Page,
    StoredMessage,
    decode_cursor,
    encode_cursor,
)
from .models import message_counters, messages
from .sql_batch import (  # the SQL engine's own parts, kept beside it in one module
    _DIVISION_BY_ZERO,
    _PAGE,
    _PAGE_BEFORE,
    _PAGE_RAW,
    _PAGE_RAW_BEFORE,
    _PG_BATCH,
    _TEXTS,
    _TEXTS_BEFORE,
    _AlreadyStored,
    _append_batch,
    _dict_of,
    _dump,
    _from_row,
    _key_query,
    _KeyTaken,
    _row,
    _stored,
)

if TYPE_CHECKING:
    from secureconnect.store.sql import Database


class MessageStore(Protocol):
    """What the chat service needs from a message store. See the module docstring."""

    @property
    def ordered_appends(self) -> bool:
        """True when appends *submitted* in some order get their seqs in that order, so
        a caller may submit the next message before the previous one is stored."""
        ...

    async def append(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        """Store ``message`` with the next seq; ``(stored, created)``."""
        ...

    def submit(self, message: NewMessage) -> asyncio.Future[tuple[StoredMessage, bool]]:
        """:meth:`append`, submitted now (synchronously); the future has its result."""
        ...

    async def get(self, conversation_id: str, message_id: str) -> StoredMessage | None: ...

    async def find(
        self, conversation_id: str, sender_id: str, idempotency_key: str
    ) -> StoredMessage | None:
        """The message an earlier ``append`` stored under this key, if any."""
        ...

    async def edit(
        self,
        conversation_id: str,
        message_id: str,
        *,
        content: str,
        metadata: dict[str, Any] | None,
        edited_at: datetime,
    ) -> StoredMessage | None:
        """Replace content and metadata of a live message; ``None`` if unknown or deleted."""
        ...

    async def delete(
        self, conversation_id: str, message_id: str, *, deleted_at: datetime
    ) -> StoredMessage | None:
        """Tombstone a message (idempotent); ``None`` if unknown."""
        ...

    async def page(self, conversation_id: str, *, before: str | None, limit: int) -> Page: ...

    async def text_page(self, conversation_id: str, *, after_seq: int,
                        before_seq: int | None, limit: int) -> list[MessageText]:
        """Up to ``limit`` messages with ``after_seq < seq < before_seq``, newest first,
        as :class:`.api.MessageText` (fewer than ``limit``: there are no more)."""
        ...


# ---------------------------------------------------------------------------
# SQL implementation (SQLite, PostgreSQL)
# ---------------------------------------------------------------------------




@asynccontextmanager
async def maybe_locked(lock: asyncio.Lock | None) -> AsyncIterator[None]:
    if lock is None:
        yield
        return
    async with lock:
        yield


class SqlMessageStore:
    """Messages in the kernel's SQL database.

    Seq allocation: ``UPDATE chat_message_counters SET last_seq = last_seq + 1 ...
    RETURNING`` inside the insert's transaction. That statement serialises the writers
    of one conversation (row lock on PostgreSQL, the write lock on SQLite), so the
    idempotency lookup that follows sees every earlier commit and seqs never repeat or
    skip: a rolled-back transaction gives its seq back.
    """

    def __init__(
        self, db: Database, *, max_attempts: int = 5, write_lock: asyncio.Lock | None = None
    ) -> None:
        self.db = db
        self.max_attempts = max_attempts
        # SQLite has one writer: queueing writers here instead of in SQLite's busy
        # handler (which sleeps in steps of up to 100 ms) keeps appends fast
        self.write_lock = write_lock or (asyncio.Lock() if db.is_sqlite else None)
        # Group commit: appends that arrive while a batch is being written are stored
        # together in the next transaction (one ``db.write`` hand-off) instead of one
        # transaction each. SQLite has one writer anyway; on PostgreSQL the appends of
        # one conversation serialise on its counter row, so one transaction per message
        # (four round trips) capped a conversation at a few dozen messages a second.
        self._waiting: list[tuple[NewMessage, asyncio.Future[tuple[StoredMessage, bool]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._look_up_until = 0.0  # (see _append_batch)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)

    @property
    def ordered_appends(self) -> bool:
        # a group commit stores what waits in submission order, seqs in that order
        return True

    async def append(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        return await asyncio.shield(self.submit(message))

    def submit(self, message: NewMessage) -> asyncio.Future[tuple[StoredMessage, bool]]:
        future: asyncio.Future[tuple[StoredMessage, bool]] = (
            asyncio.get_running_loop().create_future())
        self._waiting.append((message, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="chat-group-commit")
        return future

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:256], self._waiting[256:]
            try:
                results = await self._append_batch([m for m, _ in batch])
            except Exception:
                # one by one, so that a failure stays with its own message
                for message, future in batch:
                    try:
                        result = await self.append_one(message)
                    except Exception as exc:
                        if not future.done():
                            future.set_exception(exc)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _append_batch(self, batch: list[NewMessage]) -> list[tuple[StoredMessage, bool]]:
        # First optimistically: the keys claimed by the insert itself (ON CONFLICT DO
        # NOTHING on the unique key), no look-up statement; a key found taken rolls the
        # transaction back (no seq consumed) and the batch runs again with its keys
        # looked up first — retries and concurrent duplicates only.
        # After a taken key the next second's batches look their keys up first: a
        # client resending a burst of unanswered sends does not pay two transactions
        # for each batch.
        async with self._writing():
            look_up = time.monotonic() < self._look_up_until
            if not look_up and self.db.is_postgres:
                done = await self._append_in_one_statement(batch)
                if done is not None:
                    return done
            try:
                return await self.db.write(_append_batch, batch, look_up, quick=True)
            except _KeyTaken:
                self._look_up_until = time.monotonic() + 1.0
                return await self.db.write(_append_batch, batch, True, quick=True)

    async def _append_in_one_statement(
            self, batch: list[NewMessage]) -> list[tuple[StoredMessage, bool]] | None:
        """PostgreSQL, the common batch — one conversation with a counter row, every key
        new: the counter update and the claiming insert in one statement, in autocommit
        (one round trip instead of BEGIN, UPDATE, INSERT, COMMIT). A taken key fails the
        whole statement (nothing is kept, no seq consumed); that, a missing counter row,
        or a batch of another shape answers ``None``: the transaction path runs it."""
        cid = batch[0].conversation_id
        keys = [(m.sender_id, m.idempotency_key) for m in batch if m.idempotency_key]
        if any(m.conversation_id != cid for m in batch) or len(set(keys)) != len(keys):
            return None
        params = {
            "cid": cid, "n": len(batch),
            "ids": [m.id for m in batch],
            "senders": [m.sender_id for m in batch],
            "types": [m.message_type for m in batch],
            "contents": [m.content for m in batch],
            "encrypted": [m.is_encrypted for m in batch],
            "metadata": [_dump(m.metadata) for m in batch],
            "files": [m.file_id for m in batch],
            "keys": [m.idempotency_key for m in batch],
            "created": [m.created_at for m in batch],
        }
        try:
            rows = await self.db.execute_one(_PG_BATCH, params)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) == _DIVISION_BY_ZERO:
                return None  # a key was taken: the statement changed nothing
            raise
        if not rows:
            return None  # no counter row yet: nothing was inserted either
        first = int(rows[0][0]) - len(batch) + 1
        return [(_stored(m, first + i), True) for i, m in enumerate(batch)]

    async def append_one(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        """Append in a transaction of its own."""
        for _ in range(self.max_attempts):
            try:
                return await self._append_once(message), True
            except _AlreadyStored as hit:
                return hit.message, False
            except IntegrityError:
                # A concurrent writer created the counter row or stored the same key
                # first; whichever it was, looking again settles it.
                if message.idempotency_key is not None:
                    existing = await self._by_key(message)
                    if existing is not None:
                        return existing, False
        raise RuntimeError(
            f"could not allocate a seq in conversation {message.conversation_id} "
            f"after {self.max_attempts} attempts"
        )

    def _writing(self) -> Any:
        return maybe_locked(self.write_lock)

    async def _append_once(self, message: NewMessage) -> StoredMessage:
        async with self._writing(), self.db.connect() as conn:
            seq = await self._next_seq(conn, message.conversation_id)
            if message.idempotency_key is not None:
                existing = await self._by_key(message, conn)
                if existing is not None:
                    raise _AlreadyStored(existing)
            await conn.execute(insert(messages).values(**_row(message, seq)))
        return _stored(message, seq)

    @staticmethod
    async def _next_seq(conn: AsyncConnection, conversation_id: str) -> int:
        c = message_counters.c
        row = (
            await conn.execute(
                update(message_counters)
                .where(c.conversation_id == conversation_id)
                .values(last_seq=c.last_seq + 1)
                .returning(c.last_seq)
            )
        ).first()
        if row is not None:
            return int(row[0])
        # first message: a concurrent first writer makes this fail (IntegrityError)
        await conn.execute(
            insert(message_counters).values(conversation_id=conversation_id, last_seq=1)
        )
        return 1

    async def _by_key(
        self, message: NewMessage, conn: AsyncConnection | None = None
    ) -> StoredMessage | None:
        assert message.idempotency_key is not None
        if conn is None:
            return await self.find(
                message.conversation_id, message.sender_id, message.idempotency_key
            )
        query = _key_query(message.conversation_id, message.sender_id, message.idempotency_key)
        row = (await conn.execute(query)).first()
        return None if row is None else _from_row(row)

    async def find(
        self, conversation_id: str, sender_id: str, idempotency_key: str
    ) -> StoredMessage | None:
        row = await self.db.fetch_one(_key_query(conversation_id, sender_id, idempotency_key))
        return None if row is None else _from_row(row)

    async def get(self, conversation_id: str, message_id: str) -> StoredMessage | None:
        row = await self.db.fetch_one(
            select(messages).where(
                messages.c.conversation_id == conversation_id,
                messages.c.id == message_id,
            )
        )
        return None if row is None else _from_row(row)

    async def edit(
        self,
        conversation_id: str,
        message_id: str,
        *,
        content: str,
        metadata: dict[str, Any] | None,
        edited_at: datetime,
    ) -> StoredMessage | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    update(messages)
                    .where(
                        messages.c.conversation_id == conversation_id,
                        messages.c.id == message_id,
                        messages.c.deleted_at.is_(None),
                    )
                    .values(content=content, metadata=_dump(metadata), edited_at=edited_at)
                    .returning(*messages.c)
                )
            ).first()
        return None if row is None else _from_row(row)

    async def delete(
        self, conversation_id: str, message_id: str, *, deleted_at: datetime
    ) -> StoredMessage | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(
                    update(messages)
                    .where(
                        messages.c.conversation_id == conversation_id,
                        messages.c.id == message_id,
                        messages.c.deleted_at.is_(None),
                    )
                    .values(content=None, metadata=None, deleted_at=deleted_at)
                    .returning(*messages.c)
                )
            ).first()
        if row is not None:
            return _from_row(row)
        existing = await self.get(conversation_id, message_id)  # already a tombstone?
        return existing

    async def page(self, conversation_id: str, *, before: str | None, limit: int) -> Page:
        rows = await self._page_rows(_PAGE, _PAGE_BEFORE, conversation_id, before, limit)
        found = [_from_row(r) for r in rows[:limit]]
        more = len(rows) > limit and found
        return Page(found, encode_cursor(found[-1].seq) if more else None)

    async def page_dicts(self, conversation_id: str, *, before: str | None,
                         limit: int) -> tuple[list[dict[str, Any]], str | None]:
        """:meth:`page` as the client representation (``as_dict`` of each message) and
        the next cursor, built straight from the rows: no message objects, timestamps
        SQLite stored as text turned into the API's format without parsing them."""
        rows = await self._page_rows(_PAGE_RAW, _PAGE_RAW_BEFORE, conversation_id, before,
                                     limit)
        found = [_dict_of(r) for r in rows[:limit]]
        more = len(rows) > limit and found
        return found, encode_cursor(found[-1]["seq"]) if more else None

    async def text_page(self, conversation_id: str, *, after_seq: int,
                        before_seq: int | None, limit: int) -> list[MessageText]:
        params: dict[str, Any] = {"cid": conversation_id, "after": after_seq,
                                  "limit": limit}
        if before_seq is not None:
            params["before"] = before_seq
        rows: Sequence[Any] = await self.db.fetch(
            _TEXTS if before_seq is None else _TEXTS_BEFORE, params)
        return [MessageText(int(r[0]), r[1], r[2], r[3], bool(r[4])) for r in rows]

    async def _page_rows(self, first: Any, later: Any, conversation_id: str,
                         before: str | None, limit: int) -> Sequence[Any]:
        """One more row than ``limit`` (it says whether a next page exists), newest
        first: ``first`` for the newest page, ``later`` for the page before a cursor."""
        params: dict[str, Any] = {"cid": conversation_id, "limit": limit + 1}
        if before is not None:
            params["before"] = decode_cursor(before)
        return await self.db.fetch(first if before is None else later, params)


__all__ = [
    "InvalidCursor",
    "MessageStore",
    "NewMessage",
    "Page",
    "SqlMessageStore",
    "StoredMessage",
]
