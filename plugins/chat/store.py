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

Why one file of ~550 lines: the contract, its value types and the SQL engine's group
commit are read together when either changes (the Cassandra engine imports the value
types from here); splitting the contract from its reference implementation would make
the invariants above harder to check against the code that keeps them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import (
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    insert,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from secureconnect.models import rfc3339

from .models import message_counters, messages

if TYPE_CHECKING:
    from secureconnect.store.sql import Database


@dataclass(frozen=True)
class NewMessage:
    """A message about to be stored (validated and guarded by the service)."""

    id: str
    conversation_id: str
    sender_id: str
    message_type: str
    content: str
    is_encrypted: bool
    metadata: dict[str, Any] | None
    file_id: str | None
    created_at: datetime
    idempotency_key: str | None = None


@dataclass(frozen=True)
class StoredMessage:
    id: str
    conversation_id: str
    seq: int
    sender_id: str
    message_type: str
    content: str | None
    is_encrypted: bool
    metadata: dict[str, Any] | None
    file_id: str | None
    created_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    def as_dict(self) -> dict[str, Any]:
        """The client representation (JSON-ready)."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "sender_id": self.sender_id,
            "message_type": self.message_type,
            "content": self.content,
            "is_encrypted": self.is_encrypted,
            "metadata": self.metadata,
            "file_id": self.file_id,
            "created_at": rfc3339(self.created_at),
            "edited_at": rfc3339(self.edited_at),
            "deleted": self.deleted,
        }


@dataclass(frozen=True)
class Page:
    messages: list[StoredMessage] = field(default_factory=list)
    #: pass back as ``before`` for the next (older) page; ``None`` when there is none
    next_cursor: str | None = None


class InvalidCursor(ValueError):
    """The cursor was not produced by this store (or was tampered with)."""


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


# ---------------------------------------------------------------------------
# SQL implementation (SQLite, PostgreSQL)
# ---------------------------------------------------------------------------


class _KeyTaken(Exception):
    """Raised inside an optimistic batch: an idempotency key was already stored."""


class _AlreadyStored(Exception):
    """Raised inside the append transaction to roll back the seq it took."""

    def __init__(self, message: StoredMessage) -> None:
        self.message = message


_CURSOR_PREFIX = "s1:"


@asynccontextmanager
async def maybe_locked(lock: asyncio.Lock | None) -> AsyncIterator[None]:
    if lock is None:
        yield
        return
    async with lock:
        yield


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("the cursor is not one this server produced") from None
    digits = raw[len(_CURSOR_PREFIX) :]
    # ASCII digits only ("²" is a digit to str.isdigit), and within a BIGINT
    if (not raw.startswith(_CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit()
            or len(digits) > 18):
        raise InvalidCursor("the cursor is not one this server produced")
    return int(digits)


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

    async def _page_rows(self, first: Any, later: Any, conversation_id: str,
                         before: str | None, limit: int) -> Sequence[Any]:
        """One more row than ``limit`` (it says whether a next page exists), newest
        first: ``first`` for the newest page, ``later`` for the page before a cursor."""
        params: dict[str, Any] = {"cid": conversation_id, "limit": limit + 1}
        if before is not None:
            params["before"] = decode_cursor(before)
        return await self.db.fetch(first if before is None else later, params)



# the history page, built once (bound per call)
_PAGE = (select(messages).where(messages.c.conversation_id == bindparam("cid"))
         .order_by(messages.c.seq.desc()).limit(bindparam("limit", type_=Integer)))
_PAGE_BEFORE = (
    select(messages)
    .where(messages.c.conversation_id == bindparam("cid"),
           messages.c.seq < bindparam("before", type_=Integer))
    .order_by(messages.c.seq.desc()).limit(bindparam("limit", type_=Integer))
)

# the history page for page_dicts: the columns in as_dict's order, as the driver gives
# them (no result processing): timestamps as SQLite's stored text or PostgreSQL's aware
# datetimes, is_encrypted as 0/1 or a bool
_m = messages.c
_RAW_COLUMNS = (_m.id, _m.conversation_id, _m.seq, _m.sender_id, _m.message_type, _m.content,
                type_coerce(_m.is_encrypted, Integer).label("is_encrypted"),
                _m["metadata"], _m.file_id,
                type_coerce(_m.created_at, String).label("created_at"),
                type_coerce(_m.edited_at, String).label("edited_at"),
                type_coerce(_m.deleted_at, String).label("deleted_at"))
_PAGE_RAW = (select(*_RAW_COLUMNS).where(_m.conversation_id == bindparam("cid"))
             .order_by(_m.seq.desc()).limit(bindparam("limit", type_=Integer)))
_PAGE_RAW_BEFORE = (
    select(*_RAW_COLUMNS)
    .where(_m.conversation_id == bindparam("cid"), _m.seq < bindparam("before", type_=Integer))
    .order_by(_m.seq.desc()).limit(bindparam("limit", type_=Integer))
)


def _timestamp(value: Any) -> str | None:
    """A timestamp column's value → ``rfc3339``'s text, equal to what the UTC
    datetime it stands for gives."""
    if value is None:
        return None
    if isinstance(value, str):
        if (len(value) == 26 and value[10] == " " and value[19] == "." and value[4] == "-"
                and value[7] == "-" and value[13] == ":" and value[16] == ":"):
            # naive UTC as SQLAlchemy writes it on SQLite ("2026-12-07 08:30:15.123456")
            if value.endswith(".000000"):
                return f"{value[:10]}T{value[11:19]}Z"
            return f"{value[:10]}T{value[11:]}Z"
        parsed = datetime.fromisoformat(value)  # (written some other way)
        value = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    return rfc3339(value)


def _dict_of(row: Any) -> dict[str, Any]:
    """``StoredMessage.as_dict`` of a row of ``_PAGE_RAW`` (by position)."""
    (id_, cid, seq, sender, message_type, content, encrypted, metadata, file_id, created,
     edited, deleted) = row
    return {
        "id": id_,
        "conversation_id": cid,
        "seq": int(seq),
        "sender_id": sender,
        "message_type": message_type,
        "content": content,
        "is_encrypted": bool(encrypted),
        "metadata": None if metadata is None else json.loads(metadata),
        "file_id": file_id,
        "created_at": _timestamp(created),
        "edited_at": _timestamp(edited),
        "deleted": deleted is not None,
    }


#: PostgreSQL's SQLSTATE for a division by zero (language-independent, unlike the message)
_DIVISION_BY_ZERO = "22012"

# PostgreSQL: a batch of one conversation in one statement (see _append_in_one_statement);
# the division by zero (not constant: it depends on the insert) undoes the statement
# when an idempotency key was already taken
_PG_BATCH = text("""
WITH c AS (
  UPDATE chat_message_counters SET last_seq = last_seq + :n
  WHERE conversation_id = :cid RETURNING last_seq
), r AS (
  SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:senders AS varchar[]),
                       CAST(:types AS varchar[]), CAST(:contents AS text[]),
                       CAST(:encrypted AS boolean[]), CAST(:metadata AS text[]),
                       CAST(:files AS varchar[]), CAST(:keys AS varchar[]),
                       CAST(:created AS timestamptz[]))
    WITH ORDINALITY AS r(id, sender_id, message_type, content, is_encrypted, metadata,
                         file_id, idempotency_key, created_at, ord)
), ins AS (
  INSERT INTO chat_messages (id, conversation_id, seq, sender_id, message_type, content,
                             is_encrypted, metadata, file_id, idempotency_key, created_at)
  SELECT r.id, :cid, c.last_seq - :n + r.ord, r.sender_id, r.message_type, r.content,
         r.is_encrypted, r.metadata, r.file_id, r.idempotency_key, r.created_at
  FROM r, c
  ON CONFLICT (conversation_id, sender_id, idempotency_key) DO NOTHING
  RETURNING 1
)
SELECT c.last_seq / (CASE WHEN (SELECT count(*) FROM ins) = :n THEN 1 ELSE 0 END)
FROM c
""")


# a conversation's counter moved on by a batch (built once, bound per batch)
_BUMP = (update(message_counters)
         .where(message_counters.c.conversation_id == bindparam("cid"))
         .values(last_seq=message_counters.c.last_seq + bindparam("n", type_=Integer))
         .returning(message_counters.c.last_seq))


def _claiming_insert(dialect: str) -> Any:
    """The multi-row insert that claims idempotency keys itself: a row whose key is
    already stored is skipped (``ON CONFLICT DO NOTHING``), the stored rows' ids come
    back. ``None`` where the engine has no such statement."""
    target = ["conversation_id", "sender_id", "idempotency_key"]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(messages).on_conflict_do_nothing(index_elements=target).returning(
            messages.c.id)
    if dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35):  # RETURNING
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(messages).on_conflict_do_nothing(
            index_elements=target).returning(messages.c.id)
    return None


_CLAIMING: dict[str, Any] = {}


def _append_batch(conn: Connection, batch: list[NewMessage],
                  look_up: bool = True) -> list[tuple[StoredMessage, bool]]:
    """Store a batch in one transaction (the caller's): idempotency look-ups (one
    statement for every key of the batch; with ``look_up=False`` none — the insert
    claims the keys and raises :class:`_KeyTaken` if one was taken), one counter update
    per conversation, one multi-row insert."""
    results: list[tuple[StoredMessage, bool] | None] = [None] * len(batch)
    first_of_key: dict[tuple[str, str, str], int] = {}
    keyed = any(m.idempotency_key is not None for m in batch)
    dialect = conn.dialect.name
    if dialect not in _CLAIMING:
        _CLAIMING[dialect] = _claiming_insert(dialect)
    claiming = _CLAIMING[dialect] if keyed and not look_up else None
    stored = _stored_keys(conn, batch) if keyed and claiming is None else {}
    fresh: list[int] = []
    for i, message in enumerate(batch):
        key = message.idempotency_key
        if key is not None:
            slot = (message.conversation_id, message.sender_id, key)
            if slot in first_of_key:
                continue  # the same key twice in one batch: answered below
            found = stored.get(slot)
            if found is not None:
                results[i] = (found, False)
                continue
            first_of_key[slot] = i
        fresh.append(i)
    counts: dict[str, int] = {}
    for i in fresh:
        cid = batch[i].conversation_id
        counts[cid] = counts.get(cid, 0) + 1
    next_seq: dict[str, int] = {}
    # counter rows locked in one order by every writer: two instances' batches that
    # share conversations queue instead of deadlocking (PostgreSQL)
    for cid, n in sorted(counts.items()):
        row = conn.execute(_BUMP, {"cid": cid, "n": n}).first()
        if row is None:
            conn.execute(insert(message_counters).values(conversation_id=cid, last_seq=n))
            next_seq[cid] = 1
        else:
            next_seq[cid] = int(row[0]) - n + 1
    rows = []
    for i in fresh:
        message = batch[i]
        seq = next_seq[message.conversation_id]
        next_seq[message.conversation_id] = seq + 1
        rows.append(_row(message, seq))
        results[i] = (_stored(message, seq), True)
    if rows and claiming is not None:
        if len(conn.execute(claiming, rows).all()) != len(rows):
            raise _KeyTaken  # (rolls back: no seq consumed)
    elif rows:
        conn.execute(insert(messages), rows)
    out: list[tuple[StoredMessage, bool]] = []
    for i, message in enumerate(batch):
        result = results[i]
        if result is None:
            assert message.idempotency_key is not None
            first = results[first_of_key[(message.conversation_id, message.sender_id,
                                          message.idempotency_key)]]
            assert first is not None
            result = (first[0], False)
        out.append(result)
    return out


def _stored_keys(conn: Connection, batch: list[NewMessage]
                 ) -> dict[tuple[str, str, str], StoredMessage]:
    """The messages already stored under the batch's idempotency keys, by key."""
    slots: set[tuple[str, str, str]] = set()
    for message in batch:
        if message.idempotency_key is not None:
            slots.add((message.conversation_id, message.sender_id, message.idempotency_key))
    found: dict[tuple[str, str, str], StoredMessage] = {}
    ordered = sorted(slots)
    for start in range(0, len(ordered), 64):  # a bounded statement (SQLite's variable cap)
        query = select(messages).where(or_(*(
            and_(messages.c.conversation_id == cid, messages.c.sender_id == sid,
                 messages.c.idempotency_key == key)
            for cid, sid, key in ordered[start:start + 64])))
        for row in conn.execute(query):
            m = row._mapping
            found[(m["conversation_id"], m["sender_id"], m["idempotency_key"])] = _from_row(row)
    return found


def _key_query(conversation_id: str, sender_id: str, idempotency_key: str) -> Any:
    """The statement finding the message stored under an idempotency key."""
    return select(messages).where(
        messages.c.conversation_id == conversation_id,
        messages.c.sender_id == sender_id,
        messages.c.idempotency_key == idempotency_key,
    )


def _row(message: NewMessage, seq: int) -> dict[str, Any]:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "seq": seq,
        "sender_id": message.sender_id,
        "message_type": message.message_type,
        "content": message.content,
        "is_encrypted": message.is_encrypted,
        "metadata": _dump(message.metadata),
        "file_id": message.file_id,
        "idempotency_key": message.idempotency_key,
        "created_at": message.created_at,
    }


def _stored(message: NewMessage, seq: int) -> StoredMessage:
    return StoredMessage(
        id=message.id,
        conversation_id=message.conversation_id,
        seq=seq,
        sender_id=message.sender_id,
        message_type=message.message_type,
        content=message.content,
        is_encrypted=message.is_encrypted,
        metadata=message.metadata,
        file_id=message.file_id,
        created_at=message.created_at,
    )


def _dump(metadata: dict[str, Any] | None) -> str | None:
    return None if metadata is None else json.dumps(metadata, separators=(",", ":"))


def _from_row(row: Any) -> StoredMessage:
    m = row._mapping
    return StoredMessage(
        id=m["id"],
        conversation_id=m["conversation_id"],
        seq=int(m["seq"]),
        sender_id=m["sender_id"],
        message_type=m["message_type"],
        content=m["content"],
        is_encrypted=bool(m["is_encrypted"]),
        metadata=None if m["metadata"] is None else json.loads(m["metadata"]),
        file_id=m["file_id"],
        created_at=m["created_at"],
        edited_at=m["edited_at"],
        deleted_at=m["deleted_at"],
    )


__all__ = [
    "InvalidCursor",
    "MessageStore",
    "NewMessage",
    "Page",
    "SqlMessageStore",
    "StoredMessage",
]
