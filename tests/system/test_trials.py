"""One system trial per fault class of issue 22, against real services: Redis killed
and restarted under two instances, PostgreSQL stopped and started, PostgreSQL behind
a delaying proxy, a slow consumer, SIGTERM under load. Each asserts that no
acknowledged (201) message is lost, that errors come within the configured timeouts
(+1 s), that the service recovers without a restart, and that its metrics say what
happened. The run ends with a table of the trials (``conftest.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect.testing.proxy import DelayProxy
from secureconnect.testing.services import free_port
from tests.plugins.chat.helpers import create_group, merge, users

from .load import UNLIMITED, Sender

pytestmark = pytest.mark.slow

SECRET = {"jwt_secret": "system-trials-share-this-secret-0123456789"}
SLACK = 1.0


def _chat_contents(frames: list[dict[str, Any]]) -> set[str]:
    return {str(f["data"].get("content")) for f in frames if f.get("type") == "chat.message"}


async def _drain(ws: Any, quiet: float = 1.0) -> None:
    """Read what the socket has until it is quiet for ``quiet`` seconds."""
    while True:
        frame = await ws._receive(quiet)
        if frame is None or frame.get("type") == "__timeout__":
            return


async def test_redis_killed_and_restarted_under_two_instances(
        sc_client, sc_ws, redis_server, postgres_url, trial):
    socket_timeout = 0.5
    overrides = merge(UNLIMITED, {"redis": {"url": redis_server.url,
                                            "socket_timeout": socket_timeout},
                                  "database": {"url": postgres_url}, "auth": SECRET})
    a = await sc_client(overrides)
    b = await sc_client(overrides)
    alice, bob = await users(a, 2)
    cid = await create_group(a, alice, [bob])
    ws_b = await sc_ws(b, bob.access_token)
    sender = Sender(a, alice, cid, prefix="redis").start()
    await asyncio.sleep(1.0)
    redis_server.stop_signal = signal.SIGKILL
    redis_server.stop()  # killed: no goodbye to any client
    await asyncio.sleep(2.0)
    redis_server.start()
    kernel_a, kernel_b = a.app[KERNEL], b.app[KERNEL]
    # recovery without a restart: a message sent on A reaches B's socket live again
    await wait_for(lambda: kernel_b.metrics.value("bus_reconnects_total") >= 1, timeout=20,
                   message="B's bus is back")
    await asyncio.sleep(1.0)
    await sender.stop()
    marker = Sender(a, alice, cid, prefix="after")
    assert (await marker.send())[0] == 201
    await ws_b.expect("chat.message", lambda f: f["data"]["content"] == "after-0",
                      timeout=10)
    await _drain(ws_b)

    lost = await sender.lost(b, bob)  # read through the other instance
    live = _chat_contents(ws_b.seen)
    notices = [f for f in ws_b.seen if f.get("type") == "resync"]
    missed = [c for c in sender.acked if c not in live]
    trial.record("redis kill/restart, 2 instances", acked=len(sender.acked), lost=len(lost),
                 note=f"{len(missed)} missed live, {len(notices)} resync")
    assert lost == []
    # a degradable dependency: every send still succeeds, within the Redis timeouts
    assert sender.outcomes() == {201: len(sender.results)}, sender.outcomes()
    assert sender.slowest() < 3 * socket_timeout + SLACK, sender.slowest()
    # B missed what A published while the bus was down, and was told to catch up
    assert missed, "the outage did not cost B any live event: the trial proved nothing"
    assert any(cid in n["data"].get("conversation_ids", []) for n in notices), notices
    assert kernel_a.metrics.value("bus_publish_errors_total") >= 1
    assert kernel_b.metrics.value("websocket_send_queue_dropped_total") == 0


async def test_postgres_stopped_and_started(private_postgres, sc_client, trial):
    # (private_postgres first: torn down after the app, which writes at shutdown)
    timeouts = {"query_timeout": 1.0, "acquire_timeout": 1.0}
    url = private_postgres.create_database("trial")
    client = await sc_client(merge(UNLIMITED, {"database": {"url": url, **timeouts},
                                               "auth": {"session_cache_ttl": 0.01}}))
    alice, bob = await users(client, 2)
    cid = await create_group(client, alice, [bob])
    sender = Sender(client, alice, cid, prefix="pg", interval=0.05).start()
    await asyncio.sleep(1.0)
    private_postgres.stop()
    down_from = len(sender.results)
    await asyncio.sleep(3.0)
    down = sender.results[down_from:]
    private_postgres.start()
    # recovery without a restart
    await wait_for(lambda: sender.results[-1][1] == 201, timeout=30, interval=0.2,
                   message="sends succeed again")
    await asyncio.sleep(1.0)
    await sender.stop()
    lost = await sender.lost()
    failed = [r for r in down if r[1] != 201]
    trial.record("postgres stop/start", acked=len(sender.acked), lost=len(lost),
                 note=f"{len(failed)} refused while down")
    assert lost == []
    assert failed, "no send failed while PostgreSQL was down: the trial proved nothing"
    assert {r[1] for r in failed} <= {503}, {r[1] for r in failed}
    budget = timeouts["query_timeout"] + timeouts["acquire_timeout"] + SLACK
    assert max(r[2] for r in failed) < budget, sorted(r[2] for r in failed)[-5:]
    kernel = client.app[KERNEL]
    await wait_for(lambda: kernel.metrics.value("db_connections_in_use") == 0, timeout=5,
                   message="no connection left checked out at rest")


async def test_postgres_behind_a_delaying_proxy(sc_client, postgres_server, postgres_url,
                                                trial):
    timeouts = {"query_timeout": 1.0, "acquire_timeout": 1.0}
    proxy = await DelayProxy("127.0.0.1", postgres_server.port).start()
    client = None
    try:
        client = await sc_client(merge(UNLIMITED, {
            "database": {"url": proxy.url(postgres_url), **timeouts},
            "auth": {"session_cache_ttl": 0.01}}))
        alice, bob = await users(client, 2)
        cid = await create_group(client, alice, [bob])
        sender = Sender(client, alice, cid, prefix="delay", interval=0.05).start()
        await asyncio.sleep(1.0)
        proxy.delay = 4.0
        slow_from = len(sender.results)
        await asyncio.sleep(4.0)
        slow = sender.results[slow_from:]
        proxy.delay = 0.0
        await wait_for(lambda: sender.results[-1][1] == 201, timeout=30, interval=0.2,
                       message="sends succeed again")
        await asyncio.sleep(1.0)
        await sender.stop()
        lost = await sender.lost()
        failed = [r for r in slow if r[1] != 201]
        kernel = client.app[KERNEL]
        cut = (kernel.metrics.value("db_query_timeout_total")
               + kernel.metrics.value("db_connection_acquire_timeout_total"))
        trial.record("postgres 4 s delay proxy", acked=len(sender.acked), lost=len(lost),
                     note=f"{len(failed)} refused, {int(cut)} timeouts counted")
        assert lost == []
        assert failed, "no send failed behind the delay: the trial proved nothing"
        assert {r[1] for r in failed} <= {503, 504}, {r[1] for r in failed}
        budget = timeouts["query_timeout"] + timeouts["acquire_timeout"] + SLACK
        assert max(r[2] for r in slow) < budget, sorted(r[2] for r in slow)[-5:]
        assert cut >= 1
    finally:
        if client is not None:
            await client.close()  # shut down (writes pending activity) while it can
        await proxy.close()


async def test_slow_consumer(sc_client, trial):
    client = await sc_client(merge(UNLIMITED, {
        "ws": {"send_queue_size": 8, "write_buffer_bytes": 1024, "slow_consumer": "resync"}}))
    alice, bob = await users(client, 2)
    cid = await create_group(client, alice, [bob])
    kernel = client.app[KERNEL]
    reader = await client.ws_connect("/v1/ws", headers=bob.headers, max_msg_size=0)
    content = "x" * 10000
    acked = 0
    # bob reads nothing meanwhile: kernel buffers fill, then his queue overflows
    for _ in range(12):
        rs = await asyncio.gather(*(client.post(
            f"/v1/conversations/{cid}/messages", headers=alice.headers,
            json={"content": content, "message_type": "text"}) for _ in range(25)))
        acked += sum(1 for r in rs if r.status == 201)
    received = told = 0
    while True:
        try:
            msg = await reader.receive(timeout=2.0)
        except TimeoutError:
            break
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = json.loads(msg.data)
        if frame["type"] == "chat.message":
            received += 1
        elif frame["type"] == "resync":
            told += int(frame["data"]["dropped"])
    await reader.close()
    stored = await (await client.get(f"/v1/conversations/{cid}/messages",
                                     params={"limit": "200"}, headers=alice.headers)).json()
    total = len(stored["messages"])
    while stored.get("next_cursor"):
        stored = await (await client.get(
            f"/v1/conversations/{cid}/messages",
            params={"limit": "200", "before": stored["next_cursor"]},
            headers=alice.headers)).json()
        total += len(stored["messages"])
    lost = max(0, acked - total)
    trial.record("slow consumer", acked=acked, lost=lost,
                 note=f"{received} live, {told} told dropped")
    assert acked == 300
    assert lost == 0
    assert told > 0, "the queue never overflowed: the trial proved nothing"
    # the client learns of every message: live or counted in a resync notice
    assert received + told == acked, (received, told)
    assert kernel.metrics.value("websocket_send_queue_dropped_total") == told


async def _serve(data_dir: Path, port: int, shutdown_timeout: float
                 ) -> asyncio.subprocess.Process:
    env = dict(os.environ, SECURECONNECT_ENV="testing",
               SECURECONNECT_SERVER__SHUTDOWN_TIMEOUT=str(shutdown_timeout),
               SECURECONNECT_APP__DATA_DIR=str(data_dir),
               SECURECONNECT_AUTH__JWT_SECRET=SECRET["jwt_secret"],
               SECURECONNECT_DATABASE__URL="sqlite+aiosqlite:///{data_dir}/trial.db",
               SECURECONNECT_RATE_LIMITS__CLASSES__CHAT_SEND__PER_USER="100000/minute")
    exe = Path(sys.executable).with_name("secureconnect")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--port", str(port), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 60  # a loaded machine starts slowly
        while time.monotonic() < deadline:
            try:
                async with s.get(f"http://127.0.0.1:{port}/health/live") as r:
                    if r.status == 200:
                        return proc
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    proc.kill()
    pytest.fail("the server did not start")


async def test_sigterm_under_load(tmp_path: Path, trial):
    shutdown_timeout = 10.0
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await _serve(tmp_path, port, shutdown_timeout)
    acked: list[str] = []
    try:
        async with aiohttp.ClientSession(base_url=url) as s:
            tokens = []
            for _ in range(2):
                body = {"email": f"t{uuid.uuid4().hex[:10]}@example.com",
                        "password": "correct-horse-battery"}
                async with s.post("/v1/auth/register", json={**body, "display_name": "t"}) as r:
                    assert r.status == 201
                async with s.post("/v1/auth/login", json=body) as r:
                    login = await r.json()
                    tokens.append((login["access_token"], login["user"]["id"]
                                   if "user" in login else None))
            headers = {"Authorization": f"Bearer {tokens[0][0]}"}
            async with s.get("/v1/users/me",
                             headers={"Authorization": f"Bearer {tokens[1][0]}"}) as r:
                other = (await r.json())["id"]
            async with s.post("/v1/conversations", headers=headers, json={
                    "type": "group", "participant_ids": [other], "name": "t"}) as r:
                assert r.status == 201, await r.text()
                cid = (await r.json())["id"]
            stop = asyncio.Event()
            counter = iter(range(1_000_000))

            async def worker() -> None:
                while not stop.is_set():
                    content = f"term-{next(counter)}"
                    try:
                        async with s.post(f"/v1/conversations/{cid}/messages",
                                          headers=headers,
                                          json={"content": content, "message_type": "text"},
                                          timeout=aiohttp.ClientTimeout(total=30)) as r:
                            await r.read()
                            if r.status == 201:
                                acked.append(content)
                    except (aiohttp.ClientError, OSError):
                        await asyncio.sleep(0.01)

            workers = [asyncio.create_task(worker()) for _ in range(20)]
            await asyncio.sleep(1.0)
            signalled = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), shutdown_timeout + 20)
            exit_after = time.perf_counter() - signalled
            stop.set()
            await asyncio.gather(*workers)
        assert proc.returncode == 0
        # the same database, a new process: every acknowledged message is there
        proc = await _serve(tmp_path, port, shutdown_timeout)
        stored: set[str] = set()
        async with aiohttp.ClientSession(base_url=url) as s:
            cursor = None
            while True:
                params = {"limit": "200", **({"before": cursor} if cursor else {})}
                async with s.get(f"/v1/conversations/{cid}/messages", params=params,
                                 headers=headers) as r:
                    assert r.status == 200, await r.text()
                    page = await r.json()
                stored |= {m["content"] for m in page["messages"]}
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        lost = [c for c in acked if c not in stored]
        trial.record("SIGTERM under load", acked=len(acked), lost=len(lost),
                     note=f"exit after {exit_after:.1f} s")
        assert acked, "nothing was sent before the signal"
        assert lost == []
        assert exit_after < shutdown_timeout + SLACK, exit_after
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
