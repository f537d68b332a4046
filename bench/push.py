"""Push benchmark (not a test).

Three processes besides this driver:

* a fake webhook gateway (aiohttp) that counts notifications;
* the SecureConnect app with push ON: ``G`` offline members per group, each with one
  webhook device pointing at the fake gateway;
* the same app with push OFF (``push.enabled = false``), same load.

The driver sends ``M`` messages per round over HTTP (``W`` in flight) to each app,
alternating rounds (off, on, on, off, ...). Printed: chat sends/s per round and the
median, the ratio on/off (target ≥ 0.90), and notifications/s through the outbox (from
the first send until the gateway has all ``M x G`` notifications of the round).

With ``--worker`` the push-on app only enqueues (``push.deliver = false``) and a fourth
process, the same app with ``deliver = true`` on the same database and not sent any
requests, does the sending: the deployment that keeps provider calls off chat instances.

With ``--store postgres`` both apps use a database of a private, throwaway PostgreSQL
(``secureconnect.testing.services``) instead of a SQLite file.

The server CPU per chat send of the push-on app includes, without ``--worker``, the
delivery of that send's notifications (in-process delivery); the chat sends/s compare
what a burst of sends achieves (the outbox absorbs the notifications; docs/push.md
"Chat first").

    .venv/bin/python bench/push.py --members 5 --messages 300 --rounds 4 [--worker] \
        [--store sqlite|postgres]
    .venv/bin/python bench/push.py --hook-only 3000 [--store postgres]

``--hook-only N`` measures push's own share of the send path alone (see hook_cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cpu(pid: int | None) -> float:
    """CPU seconds (user + system) a process has used so far (Linux ``/proc``)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve_fake(port: int) -> None:
    count = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal count
        await request.read()
        count += 1
        return web.json_response({})

    async def get_count(request: web.Request) -> web.Response:
        return web.json_response({"count": count})

    app = web.Application()
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/count", get_count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _serve_app(port: int, data_dir: str, push_on: bool, deliver: bool = True,
               db_url: str | None = None) -> None:
    import logging

    from secureconnect.app import create_app
    from secureconnect.testing.helpers import make_settings

    logging.disable(logging.WARNING)
    settings = make_settings({
        "database": {"url": db_url or "sqlite+aiosqlite:///{data_dir}/bench.db"},
        "rate_limits": {"enabled": False},
        "push": {"enabled": push_on, "deliver": deliver, "providers": ["webhook"],
                 "webhook_allowed_hosts": ["127.0.0.1"], "poll_interval": 0.2,
                 "batch_size": 200, "concurrency": 16},
    }, data_dir=data_dir)
    web.run_app(create_app(settings), host="127.0.0.1", port=port, print=None,
                access_log=None)


async def _wait_up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with session.get(url) as r:
                if r.status < 500:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


async def _user(s: aiohttp.ClientSession, base: str, i: int) -> dict[str, Any]:
    email = f"bench{i}-{time.time_ns()}@example.com"
    body = {"email": email, "password": "correct horse battery", "display_name": f"b{i}"}
    async with s.post(f"{base}/v1/auth/register", json=body) as r:
        assert r.status == 201, await r.text()
        user = await r.json()
    login = {"email": email, "password": body["password"]}
    async with s.post(f"{base}/v1/auth/login", json=login) as r:
        assert r.status == 200, await r.text()
        tokens = await r.json()
    return {"id": user["id"], "headers": {"Authorization": f"Bearer {tokens['access_token']}"}}


async def _setup(s: aiohttp.ClientSession, base: str, fake: str, members: int,
                 push_on: bool) -> tuple[dict[str, Any], str]:
    owner = await _user(s, base, 0)
    others = [await _user(s, base, i + 1) for i in range(members)]
    async with s.post(f"{base}/v1/conversations", headers=owner["headers"], json={
            "type": "group", "name": "bench", "participant_ids": [o["id"] for o in others]}) as r:
        assert r.status == 201, await r.text()
        conv = (await r.json())["id"]
    if push_on:
        for i, o in enumerate(others):
            async with s.post(f"{base}/v1/push/devices", headers=o["headers"], json={
                    "platform": "webhook", "token": f"{fake}/hook/{i}-{time.time_ns()}"}) as r:
                assert r.status == 201, await r.text()
    return owner, conv


async def _round(s: aiohttp.ClientSession, base: str, owner: dict[str, Any], conv: str,
                 messages: int, window: int) -> float:
    sem = asyncio.Semaphore(window)

    async def one(i: int) -> None:
        async with sem, s.post(f"{base}/v1/conversations/{conv}/messages",
                               headers=owner["headers"],
                               json={"content": f"m{i}", "message_type": "text"}) as r:
            assert r.status == 201, await r.text()

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(messages)))
    return messages / (time.perf_counter() - start)


async def _count(s: aiohttp.ClientSession, fake: str) -> int:
    async with s.get(f"{fake}/count") as r:
        return int((await r.json())["count"])


async def _all_arrived(s: aiohttp.ClientSession, fake: str, want: int) -> None:
    deadline = time.perf_counter() + 120
    while await _count(s, fake) < want:
        if time.perf_counter() > deadline:
            raise RuntimeError("notifications did not all arrive in 120 s")
        await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    fake_port, on_port, off_port = _free_port(), _free_port(), _free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    procs = [ctx.Process(target=_serve_fake, args=(fake_port,), daemon=True)]
    with (tempfile.TemporaryDirectory() as d_on, tempfile.TemporaryDirectory() as d_off,
          contextlib.ExitStack() as services):
        url_on = url_off = None
        if args.store == "postgres":
            from secureconnect.testing.services import PostgresServer

            pg = services.enter_context(PostgresServer())
            url_on = pg.create_database(f"bench_push_on_{os.getpid()}")
            url_off = pg.create_database(f"bench_push_off_{os.getpid()}")
        procs += [ctx.Process(target=_serve_app,
                              args=(on_port, d_on, True, not args.worker, url_on), daemon=True),
                  ctx.Process(target=_serve_app, args=(off_port, d_off, False, True, url_off),
                              daemon=True)]
        for p in procs:
            p.start()
        pids: dict[str, int | None] = {"on": procs[1].pid, "off": procs[2].pid,
                                       "worker": None}
        try:
            if args.worker:  # started once the app has migrated the shared database
                worker_port = _free_port()
                async with aiohttp.ClientSession() as s:
                    await _wait_up(s, f"http://127.0.0.1:{on_port}/health/live")
                worker = ctx.Process(target=_serve_app,
                                     args=(worker_port, d_on, True, True, url_on), daemon=True)
                worker.start()
                procs.append(worker)
                pids["worker"] = worker.pid
                async with aiohttp.ClientSession() as s:
                    await _wait_up(s, f"http://127.0.0.1:{worker_port}/health/live")
            await _run(args, fake, f"http://127.0.0.1:{on_port}",
                       f"http://127.0.0.1:{off_port}", pids)
        finally:
            for p in procs:
                p.terminate()
                p.join(5)


async def _run(args: argparse.Namespace, fake: str, on: str, off: str,
               pids: dict[str, int | None]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        for url in (f"{fake}/count", f"{on}/health/live", f"{off}/health/live"):
            await _wait_up(s, url)
        on_owner, on_conv = await _setup(s, on, fake, args.members, True)
        off_owner, off_conv = await _setup(s, off, fake, args.members, False)
        # one uncounted round each first: the first requests of a process are slow
        await _round(s, off, off_owner, off_conv, args.messages, args.window)
        before = await _count(s, fake)
        await _round(s, on, on_owner, on_conv, args.messages, args.window)
        await _all_arrived(s, fake, before + args.messages * args.members)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        sequence: list[tuple[str, float]] = []
        push_rates: list[float] = []
        # server CPU seconds per round: the chat app (on/off) and the push worker
        cpu: dict[str, list[float]] = {"off": [], "on": [], "worker": []}
        order = ["off", "on", "on", "off"] * ((args.rounds + 1) // 2)
        for which in order[: args.rounds * 2]:
            app_cpu, worker_cpu = _cpu(pids[which]), _cpu(pids["worker"])
            if which == "on":
                before = await _count(s, fake)
                start = time.perf_counter()
                rates["on"].append(await _round(s, on, on_owner, on_conv, args.messages,
                                                args.window))
                await _all_arrived(s, fake, before + args.messages * args.members)
                push_rates.append(args.messages * args.members / (time.perf_counter() - start))
            else:
                rates["off"].append(await _round(s, off, off_owner, off_conv, args.messages,
                                                 args.window))
            sequence.append((which, rates[which][-1]))
            cpu[which].append(_cpu(pids[which]) - app_cpu)
            if which == "on" and pids["worker"] is not None:
                cpu["worker"].append(_cpu(pids["worker"]) - worker_cpu)
        async with s.get(f"{on}/metrics") as r:
            yields = sum(float(line.split()[-1]) for line in (await r.text()).splitlines()
                         if line.startswith("push_yields_total "))
    for which in ("off", "on"):
        listed = ", ".join(f"{r:.0f}" for r in rates[which])
        print(f"chat sends/s push {which:<3}: median {statistics.median(rates[which]):7.0f}"
              f"   rounds: {listed}")
    ratio = statistics.median(rates["on"]) / statistics.median(rates["off"])
    pairs = [dict(sequence[i:i + 2]) for i in range(0, len(sequence) - 1, 2)]
    adjacent = statistics.median(p["on"] / p["off"] for p in pairs if len(p) == 2)
    print(f"ratio on/off: median rounds {ratio:.2f}, median of adjacent rounds "
          f"{adjacent:.2f}  (target >= 0.90)")
    per_send = {k: 1000 * statistics.median(v) / args.messages for k, v in cpu.items() if v}
    worker = (f" + worker {per_send['worker']:.2f}" if "worker" in per_send else "")
    print(f"server CPU ms per chat send (median): off {per_send['off']:.2f}, on "
          f"{per_send['on']:.2f}{worker}; chat capacity on/off (CPU ratio) "
          f"{per_send['off'] / per_send['on']:.2f}  (target >= 0.90)")
    print(f"notifications/s through the outbox: median {statistics.median(push_rates):.0f}"
          f"   rounds: {', '.join(f'{r:.0f}' for r in push_rates)}")
    print(f"push workers' chat-first pauses in the push-on app: {yields:.0f}")


async def hook_cost(args: argparse.Namespace) -> None:
    """``--hook-only N``: push's own share of the send path, alone — ``N`` calls of
    ``sc_message_sent`` through ``kernel.notify`` into an app with ``deliver = false``
    (queue, event rows, their inserts), process CPU (database threads included) per
    message. No HTTP, no chat send: what push adds to each."""
    from aiohttp.test_utils import TestServer

    from secureconnect.app import KERNEL, create_app
    from secureconnect.ids import new_id_str
    from secureconnect.testing.helpers import make_settings

    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as services:
        url = "sqlite+aiosqlite:///{data_dir}/bench.db"
        if args.store == "postgres":
            from secureconnect.testing.services import PostgresServer

            url = services.enter_context(PostgresServer()).create_database(
                f"bench_push_hook_{os.getpid()}")
        app = create_app(make_settings({
            "database": {"url": url}, "rate_limits": {"enabled": False},
            "push": {"enabled": True, "deliver": False}}, data_dir=d))
        server = TestServer(app)
        await server.start_server()
        try:
            kernel = app[KERNEL]
            service = kernel.state["push"]
            conversation, warm = new_id_str(), 200
            messages = [{"id": new_id_str(), "conversation_id": conversation,
                         "sender_id": new_id_str(), "seq": i, "message_type": "text",
                         "content": "hello", "is_encrypted": False}
                        for i in range(args.hook_only + warm)]
            cpu = wall = 0.0
            for part in (messages[:warm], messages[warm:]):
                cpu, wall = time.process_time(), time.perf_counter()
                for i, m in enumerate(part):
                    await kernel.notify("sc_message_sent", message=m)
                    if i % args.window == 0:
                        await asyncio.sleep(0.001)  # a send rate: batches form as in a run
                await service._queue.join()
            n = args.hook_only
            print(f"push's share of the send path ({args.store}): "
                  f"{1000 * (time.process_time() - cpu) / n:.3f} ms CPU per message "
                  f"({n} messages in {time.perf_counter() - wall:.2f} s)")
        finally:
            await server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5, help="offline members per group")
    parser.add_argument("--messages", type=int, default=300, help="messages per round")
    parser.add_argument("--window", type=int, default=16, help="sends in flight")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per app")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--worker", action="store_true",
                        help="push-on app only enqueues; a separate worker process sends")
    parser.add_argument("--hook-only", type=int, default=0, metavar="N",
                        help="only measure push's share of the send path over N messages")
    parsed = parser.parse_args()
    asyncio.run(hook_cost(parsed) if parsed.hook_only else main(parsed))
