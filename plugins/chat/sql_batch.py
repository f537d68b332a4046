"""The SQL message store's statements and row work (see :class:`.store.SqlMessageStore`):
history pages built once, the rows-to-client path, and the group commit's batch —
idempotency keys claimed in the insert, PostgreSQL's one-statement batch."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

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

from secureconnect.models import rfc3339

from .message_values import NewMessage, StoredMessage
from .models import message_counters, messages


class _KeyTaken(Exception):
    """Raised inside an optimistic batch: an idempotency key was already stored."""


class _AlreadyStored(Exception):
    """Raised inside the append transaction to roll back the seq it took."""

    def __init__(self, message: StoredMessage) -> None:
        self.message = message


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

# a window of text for Conversations.texts: five columns, no result processing
_TEXT_COLUMNS = (_m.seq, _m.sender_id, _m.message_type, _m.content,
                 type_coerce(_m.is_encrypted, Integer).label("is_encrypted"))
_TEXTS = (select(*_TEXT_COLUMNS)
          .where(_m.conversation_id == bindparam("cid"),
                 _m.seq > bindparam("after", type_=Integer))
          .order_by(_m.seq.desc()).limit(bindparam("limit", type_=Integer)))
_TEXTS_BEFORE = (
    select(*_TEXT_COLUMNS)
    .where(_m.conversation_id == bindparam("cid"),
           _m.seq > bindparam("after", type_=Integer),
           _m.seq < bindparam("before", type_=Integer))
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
