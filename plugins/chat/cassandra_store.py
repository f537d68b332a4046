"""The Cassandra :class:`~.store.MessageStore` (``chat.message_store = "cassandra"``).

Same contract as the SQL store (see :mod:`.store`); conversations, participants and
receipts stay in SQL. Tables, all in the kernel's keyspace:

``chat_messages``         ``((conversation_id, bucket), seq DESC)`` — the history.
                          ``bucket = seq // bucket_size`` (``chat.cassandra_bucket_size``,
                          1,000 by default), so a partition never holds more than that
                          many messages however busy or old the conversation, and newest
                          first is the clustering order. A bucket is a slice of the
                          conversation's timeline, counted in messages rather than hours,
                          which keeps partitions bounded during bursts too.
``chat_message_ids``      ``((conversation_id, id))`` → seq: addresses one message.
``chat_message_keys``     ``((conversation_id, sender_id, idempotency_key))`` → message id:
                          claimed with ``INSERT ... IF NOT EXISTS`` (a lightweight
                          transaction) before anything else is written, so of several
                          concurrent retries exactly one writes a message.
``chat_conversation_seq`` ``(conversation_id)`` → last_seq: the next seq is taken with a
                          compare-and-set (``UPDATE ... IF last_seq = n``); a lost race
                          returns the current value and the writer tries ``n + 1`` —
                          no read-modify-write race, no gaps. The last seq seen per
                          conversation is remembered, so the usual case costs one round
                          trip.

A message is written as its id row, then its history row (both idempotent, retried
within the deadline); until the second exists the message is invisible. Failure
cases: if the writes fail after the seq was taken, that seq stays unused (a gap a
client sees as a missing number, never a duplicate); if a claim's writer dies, a retry
takes the claim over after ``claim_timeout`` seconds.

History cursors are opaque and the same shape as the SQL store's (the seq to read
below); a page walks buckets downwards from the cursor's bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from secureconnect.errors import Problem
from secureconnect.store.cassandra import CqlMigration, Statement

from .api import MessageText
from .message_values import NewMessage, Page, StoredMessage, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from secureconnect.store.cassandra import Cassandra

OWNER = "chat"

MIGRATIONS = [
    CqlMigration(1, "messages by conversation bucket, message ids, idempotency keys, seq", [
        """CREATE TABLE IF NOT EXISTS {keyspace}.chat_messages (
            conversation_id text, bucket bigint, seq bigint, id text, sender_id text,
            message_type text, content text, is_encrypted boolean, metadata text,
            file_id text, idempotency_key text, created_at timestamp, edited_at timestamp,
            deleted_at timestamp,
            PRIMARY KEY ((conversation_id, bucket), seq)
        ) WITH CLUSTERING ORDER BY (seq DESC)""",
        """CREATE TABLE IF NOT EXISTS {keyspace}.chat_message_ids (
            conversation_id text, id text, seq bigint,
            PRIMARY KEY ((conversation_id, id)))""",
        """CREATE TABLE IF NOT EXISTS {keyspace}.chat_message_keys (
            conversation_id text, sender_id text, idempotency_key text, message_id text,
            claimed_at timestamp,
            PRIMARY KEY ((conversation_id, sender_id, idempotency_key)))""",
        """CREATE TABLE IF NOT EXISTS {keyspace}.chat_conversation_seq (
            conversation_id text PRIMARY KEY, last_seq bigint)""",
    ]),
]

_COLUMNS = ("id, sender_id, message_type, content, is_encrypted, metadata, file_id, "
            "idempotency_key, created_at, edited_at, deleted_at, conversation_id, seq")


class ClaimInProgress(Problem):
    """Another request with the same idempotency key is still writing its message."""

    status = 409
    code = "idempotency_key_in_progress"


class CassandraMessageStore:
    def __init__(self, cassandra: Cassandra, *, bucket_size: int = 1000,
                 claim_timeout: float = 30.0, claim_wait: float = 3.0,
                 max_cached_seqs: int = 100_000, auto_migrate: bool = False) -> None:
        self.db = cassandra
        self.auto_migrate = auto_migrate
        self._schema_ready = not auto_migrate
        self._schema_lock = asyncio.Lock()
        self.bucket_size = bucket_size
        self.claim_timeout = claim_timeout
        self.claim_wait = claim_wait
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self._max_cached_seqs = max_cached_seqs

    # -- schema --------------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        applied = await self.db.migrate(OWNER, MIGRATIONS)
        self._schema_ready = True
        return applied

    async def _ensure_schema(self) -> None:
        """With auto-migration, the schema is applied on first use: Cassandra may be
        down when the app starts, and the app must start anyway."""
        async with self._schema_lock:
            if not self._schema_ready:
                await self.migrate()

    def bucket(self, seq: int) -> int:
        return seq // self.bucket_size

    async def _stmt(self, name: str) -> Statement:
        if not self._schema_ready:
            await self._ensure_schema()
        cql, operation, table, idempotent = _STATEMENTS[name]
        return await self.db.prepare(cql, operation=operation, table=table,
                                     idempotent=idempotent)

    async def _run(self, name: str, *params: Any) -> list[dict[str, Any]]:
        return await self.db.execute(await self._stmt(name), params)

    # -- append --------------------------------------------------------------------------
    #: concurrent appends race for seqs (compare-and-set): submission order is not kept
    ordered_appends = False

    def submit(self, message: NewMessage) -> asyncio.Future[tuple[StoredMessage, bool]]:
        return asyncio.ensure_future(self.append(message))

    async def append(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        message = _millis(message)
        if message.idempotency_key is not None:
            existing = await self._claim(message)
            if existing is not None:
                return existing, False
        try:
            seq = await self._next_seq(message.conversation_id)
            # The id row first: until the message row exists too, get() finds nothing,
            # so a reader never sees half a message. Both writes are idempotent (same
            # values again), so they are retried within the deadline. No logged batch:
            # it would cost a batchlog write and warn above 5 KB on every big message.
            await self._run("insert_id", message.conversation_id, message.id, seq)
            await self._run(
                "insert_message", message.conversation_id, self.bucket(seq), seq, message.id,
                message.sender_id, message.message_type, message.content,
                message.is_encrypted, _dump(message.metadata), message.file_id,
                message.idempotency_key, message.created_at)
        except BaseException:
            if message.idempotency_key is not None:  # let a retry write it
                await self._release(message)
            raise
        return _stored(message, seq), True

    async def _claim(self, message: NewMessage) -> StoredMessage | None:
        """Claim the idempotency key; the earlier message if someone else holds it."""
        key = (message.conversation_id, message.sender_id, message.idempotency_key)
        deadline = time.monotonic() + self.claim_wait
        rows = await self._run("claim_key", *key, message.id, _now())
        while not rows[0]["[applied]"]:
            holder, claimed_at = rows[0]["message_id"], rows[0]["claimed_at"]
            found = await self.get(message.conversation_id, holder)
            if found is not None:
                return found
            if claimed_at is None or _age(claimed_at) > self.claim_timeout:
                # the writer of that claim is gone; take it over
                rows = await self._run("take_over_key", message.id, _now(), *key, holder)
                continue
            if time.monotonic() > deadline:
                raise ClaimInProgress(
                    "a request with this idempotency key is still being processed; retry")
            await asyncio.sleep(0.02)
            rows = await self._run("claim_key", *key, message.id, _now())
        return None

    async def _release(self, message: NewMessage) -> None:
        # if this fails too, the claim times out and a retry takes it over
        with contextlib.suppress(Exception):
            await self._run("release_key", message.conversation_id, message.sender_id,
                            message.idempotency_key, message.id)

    async def _next_seq(self, conversation_id: str) -> int:
        current = self._last_seq.get(conversation_id)
        if current is None:
            rows = await self._run("read_seq", conversation_id)
            current = int(rows[0]["last_seq"]) if rows else 0
        while True:
            if current == 0:
                rows = await self._run("create_seq", conversation_id)
            else:
                rows = await self._run("bump_seq", current + 1, conversation_id, current)
            row = rows[0]
            if row["[applied]"]:
                self._remember(conversation_id, current + 1)
                return current + 1
            current = int(row["last_seq"])  # someone else was faster: try the next one

    def _remember(self, conversation_id: str, seq: int) -> None:
        self._last_seq[conversation_id] = seq
        self._last_seq.move_to_end(conversation_id)
        if len(self._last_seq) > self._max_cached_seqs:
            self._last_seq.popitem(last=False)

    # -- reads ---------------------------------------------------------------------------
    async def find(self, conversation_id: str, sender_id: str, idempotency_key: str
                   ) -> StoredMessage | None:
        rows = await self._run("read_key", conversation_id, sender_id, idempotency_key)
        if not rows:
            return None
        return await self.get(conversation_id, rows[0]["message_id"])

    async def _seq_of(self, conversation_id: str, message_id: str) -> int | None:
        rows = await self._run("read_id", conversation_id, message_id)
        return int(rows[0]["seq"]) if rows else None

    async def get(self, conversation_id: str, message_id: str) -> StoredMessage | None:
        seq = await self._seq_of(conversation_id, message_id)
        if seq is None:
            return None
        rows = await self._run("read_message", conversation_id, self.bucket(seq), seq)
        return _from_row(rows[0]) if rows else None

    async def page(self, conversation_id: str, *, before: str | None, limit: int) -> Page:
        if before is None:
            rows = await self._run("read_seq", conversation_id)
            if not rows:
                return Page([], None)
            upper = int(rows[0]["last_seq"]) + 1
        else:
            upper = decode_cursor(before)
        found: list[StoredMessage] = []
        bucket = self.bucket(upper - 1) if upper > 0 else -1
        while bucket >= 0 and len(found) <= limit:
            rows = await self._run("read_page", conversation_id, bucket, upper,
                                   limit + 1 - len(found))
            found.extend(_from_row(r) for r in rows)
            bucket -= 1
        more = len(found) > limit
        found = found[:limit]
        return Page(found, encode_cursor(found[-1].seq) if more and found else None)

    async def text_page(self, conversation_id: str, *, after_seq: int,
                        before_seq: int | None, limit: int) -> list[MessageText]:
        page = await self.page(conversation_id, limit=limit, before=None
                               if before_seq is None else encode_cursor(before_seq))
        return [MessageText(m.seq, m.sender_id, m.message_type,
                            None if m.deleted else m.content, m.is_encrypted)
                for m in page.messages if m.seq > after_seq]

    # -- edits ---------------------------------------------------------------------------
    async def edit(self, conversation_id: str, message_id: str, *, content: str,
                   metadata: dict[str, Any] | None, edited_at: datetime
                   ) -> StoredMessage | None:
        seq = await self._seq_of(conversation_id, message_id)
        if seq is None:
            return None
        rows = await self._run("edit_message", content, _dump(metadata), _ms(edited_at),
                               conversation_id, self.bucket(seq), seq)
        if not rows[0]["[applied]"]:
            return None  # deleted in the meantime (or never written)
        return await self.get(conversation_id, message_id)

    async def delete(self, conversation_id: str, message_id: str, *, deleted_at: datetime
                     ) -> StoredMessage | None:
        seq = await self._seq_of(conversation_id, message_id)
        if seq is None:
            return None
        await self._run("delete_message", _ms(deleted_at), conversation_id,
                        self.bucket(seq), seq)
        return await self.get(conversation_id, message_id)


# name → (cql, operation, table, idempotent)
_STATEMENTS: dict[str, tuple[str, str, str, bool]] = {
    "insert_id": (
        "INSERT INTO {keyspace}.chat_message_ids (conversation_id, id, seq) VALUES (?, ?, ?)",
        "insert", "chat_message_ids", True),
    "insert_message": (
        "INSERT INTO {keyspace}.chat_messages (conversation_id, bucket, seq, id, sender_id,"
        " message_type, content, is_encrypted, metadata, file_id, idempotency_key,"
        " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "insert", "chat_messages", True),
    "read_message": (
        f"SELECT {_COLUMNS} FROM {{keyspace}}.chat_messages"
        " WHERE conversation_id = ? AND bucket = ? AND seq = ?", "select", "chat_messages",
        True),
    "read_page": (
        f"SELECT {_COLUMNS} FROM {{keyspace}}.chat_messages"
        " WHERE conversation_id = ? AND bucket = ? AND seq < ? LIMIT ?", "select",
        "chat_messages", True),
    "edit_message": (
        "UPDATE {keyspace}.chat_messages SET content = ?, metadata = ?, edited_at = ?"
        " WHERE conversation_id = ? AND bucket = ? AND seq = ?"
        " IF deleted_at = null AND id != null", "update", "chat_messages", False),
    "delete_message": (
        "UPDATE {keyspace}.chat_messages SET content = null, metadata = null,"
        " deleted_at = ? WHERE conversation_id = ? AND bucket = ? AND seq = ?"
        " IF deleted_at = null AND id != null", "update", "chat_messages", False),
    "read_id": (
        "SELECT seq FROM {keyspace}.chat_message_ids WHERE conversation_id = ? AND id = ?",
        "select", "chat_message_ids", True),
    "claim_key": (
        "INSERT INTO {keyspace}.chat_message_keys (conversation_id, sender_id,"
        " idempotency_key, message_id, claimed_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
        "insert", "chat_message_keys", False),
    "take_over_key": (
        "UPDATE {keyspace}.chat_message_keys SET message_id = ?, claimed_at = ?"
        " WHERE conversation_id = ? AND sender_id = ? AND idempotency_key = ?"
        " IF message_id = ?", "update", "chat_message_keys", False),
    "release_key": (
        "DELETE FROM {keyspace}.chat_message_keys"
        " WHERE conversation_id = ? AND sender_id = ? AND idempotency_key = ?"
        " IF message_id = ?", "delete", "chat_message_keys", False),
    "read_key": (
        "SELECT message_id FROM {keyspace}.chat_message_keys"
        " WHERE conversation_id = ? AND sender_id = ? AND idempotency_key = ?",
        "select", "chat_message_keys", True),
    "read_seq": (
        "SELECT last_seq FROM {keyspace}.chat_conversation_seq WHERE conversation_id = ?",
        "select", "chat_conversation_seq", True),
    "create_seq": (
        "INSERT INTO {keyspace}.chat_conversation_seq (conversation_id, last_seq)"
        " VALUES (?, 1) IF NOT EXISTS", "insert", "chat_conversation_seq", False),
    "bump_seq": (
        "UPDATE {keyspace}.chat_conversation_seq SET last_seq = ?"
        " WHERE conversation_id = ? IF last_seq = ?", "update", "chat_conversation_seq",
        False),
}


def _now() -> datetime:
    return _ms(datetime.now(UTC))


def _ms(moment: datetime) -> datetime:
    """Cassandra timestamps hold milliseconds; round here so what a send returns is
    exactly what a later read returns."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _millis(message: NewMessage) -> NewMessage:
    from dataclasses import replace

    return replace(message, created_at=_ms(message.created_at))


def _age(claimed_at: datetime) -> float:
    if claimed_at.tzinfo is None:
        claimed_at = claimed_at.replace(tzinfo=UTC)
    return (datetime.now(UTC) - claimed_at).total_seconds()


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _dump(metadata: dict[str, Any] | None) -> str | None:
    return None if metadata is None else json.dumps(metadata, separators=(",", ":"))


def _stored(message: NewMessage, seq: int) -> StoredMessage:
    return StoredMessage(
        id=message.id, conversation_id=message.conversation_id, seq=seq,
        sender_id=message.sender_id, message_type=message.message_type,
        content=message.content, is_encrypted=message.is_encrypted,
        metadata=message.metadata, file_id=message.file_id, created_at=message.created_at)


def _from_row(row: dict[str, Any]) -> StoredMessage:
    created = _utc(row["created_at"])
    assert created is not None
    return StoredMessage(
        id=row["id"], conversation_id=row["conversation_id"], seq=int(row["seq"]),
        sender_id=row["sender_id"], message_type=row["message_type"],
        content=row["content"], is_encrypted=bool(row["is_encrypted"]),
        metadata=None if row["metadata"] is None else json.loads(row["metadata"]),
        file_id=row["file_id"], created_at=created, edited_at=_utc(row["edited_at"]),
        deleted_at=_utc(row["deleted_at"]))
