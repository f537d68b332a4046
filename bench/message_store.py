"""Message store benchmark (not a test): chat's stores on SQLite, PostgreSQL and
Cassandra, in one run, each next to a bare-driver baseline on the same server.

For each backend:

* ``append``  — ``store.append`` of C conversations x M messages, the conversations
  written concurrently, each conversation's messages one after another (the chat
  service serialises a conversation's sends); every append allocates the next seq
  and stores the message atomically.
* ``page``    — ``store.page(limit=50)`` from random cursors over what was written,
  C readers at once.
* ``bare``    — the same number of plain single-row INSERTs through the bare driver
  (aiosqlite / asyncpg / cassandra-driver ``execute_async`` on a prepared statement),
  same concurrency: what the storage costs without seq allocation, idempotency and
  metrics. The ratio ``append / bare`` shows the price of the store's guarantees.

Private PostgreSQL and Cassandra servers are started (secureconnect.testing.services)
unless ``--postgres-url`` / ``--cassandra host:port`` name running ones.

    .venv/bin/python bench/message_store.py --conversations 10 --messages 200
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from secureconnect.metrics import Metrics  # noqa: E402
from secureconnect.testing.helpers import make_settings  # noqa: E402
from secureconnect_plugins.chat.cassandra_store import CassandraMessageStore  # noqa: E402
from secureconnect_plugins.chat.models import metadata as chat_metadata  # noqa: E402
from secureconnect_plugins.chat.store import NewMessage, SqlMessageStore  # noqa: E402


def message(conversation_id: str, i: int) -> NewMessage:
    return NewMessage(id=str(uuid.uuid4()), conversation_id=conversation_id,
                      sender_id="bench-user", message_type="text",
                      content=f"benchmark message number {i} " + "x" * 80,
                      is_encrypted=False, metadata=None, file_id=None,
                      created_at=datetime.now(UTC))


async def timed(n: int, work: Callable[[], Awaitable[None]]) -> float:
    start = time.perf_counter()
    await work()
    return n / (time.perf_counter() - start)


async def run_store(store: Any, conversations: int, messages: int, pages: int
                    ) -> tuple[float, float]:
    ids = [str(uuid.uuid4()) for _ in range(conversations)]

    async def writer(cid: str) -> None:
        for i in range(messages):
            await store.append(message(cid, i))

    append_rate = await timed(conversations * messages,
                              lambda: _gather(writer(c) for c in ids))
    from secureconnect_plugins.chat.store import encode_cursor

    async def reader(cid: str) -> None:
        for _ in range(pages):
            before = encode_cursor(random.randint(51, messages + 1))
            page = await store.page(cid, before=before, limit=50)
            assert len(page.messages) == 50, len(page.messages)

    page_rate = await timed(conversations * pages, lambda: _gather(reader(c) for c in ids))
    return append_rate, page_rate


async def _gather(coros: Any) -> None:
    await asyncio.gather(*coros)


# -- backends ------------------------------------------------------------------------
async def sql_backend(url: str, args: argparse.Namespace) -> dict[str, float]:
    from secureconnect.store.sql import Database

    settings = make_settings({"database": {"url": url, "pool_size": 20, "max_overflow": 0}})
    db = Database(settings.database, Metrics(), data_dir=tempfile.mkdtemp())
    await db.start()
    async with db.engine.begin() as conn:
        await conn.run_sync(chat_metadata.create_all)
    store = SqlMessageStore(db)
    append_rate, page_rate = await run_store(store, args.conversations, args.messages,
                                             args.pages)
    bare_rate = await sql_bare(db, args)
    await db.close()
    return {"append": append_rate, "page": page_rate, "bare": bare_rate}


async def sql_bare(db: Any, args: argparse.Namespace) -> float:
    """Plain INSERTs on a raw driver connection per writer (no ORM, no seq)."""
    from sqlalchemy import text

    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE bench_bare (id VARCHAR(36) PRIMARY KEY,"
                                " conversation_id VARCHAR(36), seq INTEGER, content TEXT)"))

    async def writer(cid: str) -> None:
        for i in range(args.messages):
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql(
                    "INSERT INTO bench_bare VALUES (" + ("?, ?, ?, ?" if db.is_sqlite else
                                                         "$1, $2, $3, $4") + ")",
                    (str(uuid.uuid4()), cid, i, "x" * 100))

    lock_free = [str(uuid.uuid4()) for _ in range(args.conversations)]
    if db.is_sqlite:  # one writer at a time, as the store does
        lock = asyncio.Lock()

        async def serial(cid: str) -> None:
            for i in range(args.messages):
                async with lock, db.engine.begin() as conn:
                    await conn.exec_driver_sql(
                        "INSERT INTO bench_bare VALUES (?, ?, ?, ?)",
                        (str(uuid.uuid4()), cid, i, "x" * 100))

        return await timed(args.conversations * args.messages,
                           lambda: _gather(serial(c) for c in lock_free))
    return await timed(args.conversations * args.messages,
                       lambda: _gather(writer(c) for c in lock_free))


async def cassandra_backend(host: str, port: int, args: argparse.Namespace
                            ) -> dict[str, float]:
    from secureconnect.store.cassandra import Cassandra

    keyspace = f"bench_{uuid.uuid4().hex[:8]}"
    settings = make_settings({"cassandra": {"contact_points": [host], "port": port,
                                            "keyspace": keyspace}})
    cassandra = Cassandra(settings.cassandra, Metrics())
    await cassandra.open()
    store = CassandraMessageStore(cassandra, auto_migrate=True)
    await store.migrate()
    append_rate, page_rate = await run_store(store, args.conversations, args.messages,
                                             args.pages)
    await cassandra.execute_cql(
        "CREATE TABLE IF NOT EXISTS {keyspace}.bench_bare (conversation_id text, seq int,"
        " id text, content text, PRIMARY KEY (conversation_id, seq))", timeout=30)
    insert = await cassandra.prepare(
        "INSERT INTO {keyspace}.bench_bare (conversation_id, seq, id, content)"
        " VALUES (?, ?, ?, ?)", operation="insert", table="bench_bare", idempotent=True)

    async def writer(cid: str) -> None:
        for i in range(args.messages):
            await cassandra.execute(insert, (cid, i, str(uuid.uuid4()), "x" * 100))

    ids = [str(uuid.uuid4()) for _ in range(args.conversations)]
    bare_rate = await timed(args.conversations * args.messages,
                            lambda: _gather(writer(c) for c in ids))
    await cassandra.execute_cql(f"DROP KEYSPACE {keyspace}", timeout=60)
    await cassandra.close()
    return {"append": append_rate, "page": page_rate, "bare": bare_rate}


async def main(args: argparse.Namespace) -> None:
    from secureconnect.testing.services import CassandraServer, PostgresServer

    started: list[Any] = []
    results: dict[str, dict[str, float]] = {}
    try:
        tmp = tempfile.mkdtemp(prefix="sc-bench-")
        results["sqlite"] = await sql_backend(f"sqlite+aiosqlite:///{tmp}/bench.db", args)
        pg_url = args.postgres_url
        if pg_url is None:
            pg = PostgresServer()
            pg.start()
            started.append(pg)
            pg_url = pg.url
        results["postgresql"] = await sql_backend(pg_url, args)
        if args.cassandra:
            host, port = args.cassandra.rsplit(":", 1)
        else:
            cs = CassandraServer()
            cs.start()
            started.append(cs)
            host, port = cs.host, str(cs.port)
        results["cassandra"] = await cassandra_backend(host, int(port), args)
    finally:
        for server in started:
            server.close()
    print(f"\n{args.conversations} conversations x {args.messages} messages, "
          f"{args.pages} pages of 50 per conversation\n")
    print(f"{'backend':<12}{'append/s':>12}{'bare insert/s':>16}{'ratio':>8}{'pages/s':>12}")
    for name, r in results.items():
        print(f"{name:<12}{r['append']:>12,.0f}{r['bare']:>16,.0f}"
              f"{r['append'] / r['bare']:>8.2f}{r['page']:>12,.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--cassandra", default=None, help="host:port of a running node")
    asyncio.run(main(parser.parse_args()))
