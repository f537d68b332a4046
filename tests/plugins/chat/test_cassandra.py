"""Chat's Cassandra message store against the real server: bucketed history, the
migration command, timeouts, and an outage with recovery. The rest of the chat suite
runs against Cassandra too (the ``message_store`` parameter of ``chat_client``)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from tests.kernel.test_cli import run_cli

from .helpers import SQLITE_FILE, all_messages, create_group, history, send, users

pytestmark = pytest.mark.cassandra


def cassandra_settings(server: Any, keyspace: str = "sc_chat_tests", **chat: Any
                       ) -> dict[str, Any]:
    return {
        "database": {"url": SQLITE_FILE},
        "chat": {"message_store": "cassandra", **chat},
        "cassandra": {"contact_points": [server.host], "port": server.port,
                      "keyspace": keyspace},
    }


async def test_history_walks_small_buckets_without_gaps_or_repeats(
        sc_client: Any, cassandra_server: Any) -> None:
    client = await sc_client(cassandra_settings(cassandra_server, cassandra_bucket_size=10))
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    for i in range(35):  # buckets 0..3, the first one short (seq starts at 1)
        await send(client, a, cid, f"m{i}")
    seen: list[int] = []
    cursor = None
    while True:
        page = await history(client, b, cid, limit=7, **({"before": cursor} if cursor else {}))
        seen += [m["seq"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(range(35, 0, -1))
    # edits and tombstones address the right bucket
    target = (await history(client, b, cid, limit=30))["messages"][-1]  # seq 6, bucket 0
    r = await client.patch(f"/v1/conversations/{cid}/messages/{target['id']}",
                           json={"content": "edited"}, headers=a.headers)
    assert r.status == 200 and (await r.json())["content"] == "edited"
    r = await client.delete(f"/v1/conversations/{cid}/messages/{target['id']}",
                            headers=a.headers)
    assert r.status == 200 and (await r.json())["deleted"] is True
    stored = {m["seq"]: m for m in await all_messages(client, b, cid)}
    assert stored[target["seq"]]["deleted"] and stored[target["seq"]]["content"] is None
    assert len(stored) == 35


async def test_statement_timeouts_are_503_and_counted(sc_client: Any,
                                                      cassandra_server: Any) -> None:
    client = await sc_client(cassandra_settings(cassandra_server))
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    await send(client, a, cid, "warm up")  # schema and prepared statements ready
    kernel = client.app[KERNEL]
    kernel.cassandra.query_timeout = 0.0005  # far below one round trip
    r = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "x"},
                          headers=a.headers)
    assert r.status == 503 and (await r.json())["code"] == "database_timeout"
    timeouts = sum(kernel.metrics.value("cassandra_query_timeout_total",
                                        {"operation": op, "table": t})
                   for op, t in [("select", "chat_conversation_seq"),
                                 ("update", "chat_conversation_seq"),
                                 ("insert", "chat_conversation_seq"),
                                 ("insert", "chat_message_ids"),
                                 ("insert", "chat_messages")])
    assert timeouts >= 1
    kernel.cassandra.query_timeout = 5.0
    assert (await client.post(f"/v1/conversations/{cid}/messages", json={"content": "y"},
                              headers=a.headers)).status == 201
    assert kernel.metrics.value("cassandra_query_duration_seconds_count",
                                {"operation": "insert", "table": "chat_messages"}) >= 2


def test_migrate_command_creates_the_keyspace_then_is_up_to_date(
        tmp_path: Any, cassandra_server: Any) -> None:
    keyspace = f"sc_migrate_{uuid.uuid4().hex[:8]}"
    env = {"SECURECONNECT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/m.db",
           "SECURECONNECT_DATABASE__AUTO_MIGRATE": "false",
           "SECURECONNECT_CHAT__MESSAGE_STORE": "cassandra",
           "SECURECONNECT_CASSANDRA__CONTACT_POINTS": f'["{cassandra_server.host}"]',
           "SECURECONNECT_CASSANDRA__PORT": str(cassandra_server.port),
           "SECURECONNECT_CASSANDRA__KEYSPACE": keyspace}
    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "chat (cassandra): 1 " in first.stdout and "chat: chat_0001" in first.stdout
    second = run_cli("migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "schema is up to date"


async def test_cassandra_outage_fails_fast_and_recovers_without_restart(
        sc_client: Any, cassandra_server: Any) -> None:
    client = await sc_client(cassandra_settings(cassandra_server))
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    await send(client, a, cid, "before")
    assert (await client.get("/health/ready")).status == 200
    cassandra_server.stop()
    try:
        start = time.monotonic()
        r = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "down"},
                              headers=a.headers)
        assert r.status == 503, await r.text()
        assert (await r.json())["code"] in ("database_unavailable", "database_timeout")
        assert time.monotonic() - start < 6
        r = await client.get("/health/ready")
        assert r.status == 503 and "cassandra" in (await r.json())["failed"]
        # conversations (SQL) keep working while messages cannot be stored
        assert (await client.get("/v1/conversations", headers=a.headers)).status == 200
    finally:
        cassandra_server.start()

    async def sends() -> bool:
        r = await client.post(f"/v1/conversations/{cid}/messages", json={"content": "back"},
                              headers=a.headers)
        return r.status == 201

    await wait_for(sends, timeout=60, interval=0.5, message="sends after Cassandra restart")
    assert (await client.get("/health/ready")).status == 200
    contents = [m["content"] for m in await all_messages(client, b, cid)]
    assert contents[-1] == "before" and "back" in contents and "down" not in contents


async def test_two_instances_race_for_seq_and_idempotency_keys(
        sc_client: Any, cassandra_server: Any) -> None:
    """Two app instances (one SQL database, one keyspace) write to one conversation at
    once: the seq compare-and-set and the key claim hold across processes' caches."""
    settings = {**cassandra_settings(cassandra_server),
                "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"}}
    first = await sc_client(settings)
    second = await sc_client(settings)
    a, b = await users(first, 2)
    cid = await create_group(first, a, [b])
    await send(second, b, cid, "warm up second")  # its seq cache now lags behind

    async def post(client: Any, user: Any, content: str, key: str | None = None) -> Any:
        headers = dict(user.headers)
        if key:
            headers["Idempotency-Key"] = key
        r = await client.post(f"/v1/conversations/{cid}/messages", json={"content": content},
                              headers=headers)
        assert r.status in (200, 201), await r.text()
        return await r.json()

    import asyncio

    results = await asyncio.gather(
        *(post(first if i % 2 else second, a if i % 3 else b, f"m{i}") for i in range(120)),
        *(post(first if i % 2 else second, a, "same", key="retry-1") for i in range(10)),
    )
    assert len({m["id"] for m in results[120:]}) == 1
    stored = await all_messages(first, b, cid)
    assert sorted(m["seq"] for m in stored) == list(range(1, 123))
