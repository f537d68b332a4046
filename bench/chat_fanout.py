"""Chat fan-out benchmark (not a test).

Starts two servers in their own processes, one after the other, and drives the same
load through each from this process:

* ``chat``  — the real SecureConnect app (auth, WebSocket gateway, chat plugin) on a
  file SQLite database: clients send ``chat.send`` frames; every member's socket gets
  ``chat.message`` after the message is persisted.
* ``bare``  — a bare aiohttp WebSocket broadcast loop: a frame sent to a group is
  written to every socket of that group, nothing else (no auth, no persistence).

N sockets are spread over G groups; one sender per group sends M messages, keeping at
most W in flight (a message is "done" when the sender's own socket gets it back), or at
a fixed rate with ``--rate``. The load runs ``--rounds`` times over the same sockets.
Printed for each: delivered messages/s (deliveries to the other members' sockets; the
median round, each round listed), p50/p99 send→deliver latency over all rounds, server
memory per idle socket (RSS growth of the server process while K idle sockets are
open), and the ratios.

    .venv/bin/python bench/chat_fanout.py --sockets 200 --groups 10 --messages 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- servers (run in child processes) -----------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_app() -> web.Application:
    groups: dict[str, set[web.WebSocketResponse]] = {}

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        group = request.query["group"]
        members = groups.setdefault(group, set())
        members.add(ws)
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                for peer in list(members):
                    if not peer.closed:
                        await peer.send_str(msg.data)
        finally:
            members.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    return app


def chat_app(data_dir: str) -> web.Application:
    import logging

    from secureconnect.app import create_app
    from secureconnect.testing.helpers import make_settings

    logging.basicConfig(level=logging.WARNING)
    # the shipped stack only: plugins installed beside it (a test fixture's message
    # guard, say) would be measured too
    shipped = {"chat", "polls"}
    others = {ep.name: False for ep in entry_points(group="secureconnect")
              if ep.name not in shipped}
    settings = make_settings(
        {
            "plugins": others,
            "database": {"url": f"sqlite+aiosqlite:///{data_dir}/bench.db"},
            "rate_limits": {"enabled": False},
            # a sender here pipelines hundreds of frames a second: measure fan-out, not
            # the per-socket inbound limit (ws.inbound_rate, 50/s by default)
            "ws": {"inbound_rate": 100_000.0, "inbound_burst": 100_000},
            "logging": {"level": "WARNING"},
        },
        data_dir=data_dir,
    )
    return create_app(settings)


def serve(kind: str, port: int, data_dir: str) -> None:
    from secureconnect.app import freeze_after_startup

    app = bare_app() if kind == "bare" else chat_app(data_dir)
    freeze_after_startup(app)  # as `secureconnect serve` does (both servers alike)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- load generator -------------------------------------------------------------------
@dataclass
class Result:
    name: str
    deliveries: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    idle_bytes_per_socket: float = 0.0
    #: delivered/s of each round
    rounds: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """The median round's delivered/s (one round: deliveries / elapsed)."""
        if self.rounds:
            return sorted(self.rounds)[len(self.rounds) // 2]
        return self.deliveries / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))] * 1000


class Driver:
    """What differs between the two servers: connecting, sending, reading a delivery."""

    async def setup(self, session: aiohttp.ClientSession, sockets: int, groups: int) -> None:
        raise NotImplementedError

    async def connect(
        self, session: aiohttp.ClientSession, index: int
    ) -> aiohttp.ClientWebSocketResponse:
        raise NotImplementedError

    def frame(self, group: int, payload: str, n: int) -> str:
        raise NotImplementedError

    def delivery(self, raw: str) -> str | None:
        raise NotImplementedError


class BareDriver(Driver):
    def __init__(self, base: str, groups: int) -> None:
        self.base, self.groups = base, groups

    async def setup(self, session: aiohttp.ClientSession, sockets: int, groups: int) -> None:
        return None

    async def connect(
        self, session: aiohttp.ClientSession, index: int
    ) -> aiohttp.ClientWebSocketResponse:
        return await session.ws_connect(f"{self.base}/ws?group={index % self.groups}")

    def frame(self, group: int, payload: str, n: int) -> str:
        return payload

    def delivery(self, raw: str) -> str | None:
        return raw


class ChatDriver(Driver):
    def __init__(self, base: str) -> None:
        self.base = base
        self.tokens: list[str] = []
        self.conversations: list[str] = []

    async def setup(self, session: aiohttp.ClientSession, sockets: int, groups: int) -> None:
        async def account(i: int) -> tuple[str, str]:
            email = f"bench-{os.getpid()}-{i}@example.com"
            body = {
                "email": email,
                "password": "correct horse battery staple",
                "display_name": f"bench {i}",
            }
            async with session.post(f"{self.base}/v1/auth/register", json=body) as r:
                user = await r.json()
                assert r.status == 201, user
            async with session.post(
                f"{self.base}/v1/auth/login", json={"email": email, "password": body["password"]}
            ) as r:
                tokens = await r.json()
                assert r.status == 200, tokens
            return str(user["id"]), str(tokens["access_token"])

        accounts: list[tuple[str, str]] = []
        for start in range(0, sockets, 20):
            accounts += await asyncio.gather(
                *(account(i) for i in range(start, min(sockets, start + 20)))
            )
        self.tokens = [t for _, t in accounts]
        for g in range(groups):
            members = [accounts[i] for i in range(sockets) if i % groups == g]
            owner_token = members[0][1]
            async with session.post(
                f"{self.base}/v1/conversations",
                json={
                    "type": "group",
                    "participant_ids": [u for u, _ in members[1:]],
                    "name": f"bench {g}",
                },
                headers={"Authorization": f"Bearer {owner_token}"},
            ) as r:
                conv = await r.json()
                assert r.status == 201, conv
            self.conversations.append(str(conv["id"]))

    async def connect(
        self, session: aiohttp.ClientSession, index: int
    ) -> aiohttp.ClientWebSocketResponse:
        return await session.ws_connect(
            f"{self.base}/v1/ws", headers={"Authorization": f"Bearer {self.tokens[index]}"}
        )

    def frame(self, group: int, payload: str, n: int) -> str:
        return json.dumps(
            {
                "type": "chat.send",
                "data": {
                    "conversation_id": self.conversations[group],
                    "content": payload,
                    "message_type": "text",
                },
            }
        )

    def delivery(self, raw: str) -> str | None:
        frame = json.loads(raw)
        if frame.get("type") != "chat.message":
            return None
        return str(frame["data"]["content"])


async def measure(name: str, driver: Driver, pid: int, args: argparse.Namespace) -> Result:
    result = Result(name)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await driver.setup(session, args.sockets, args.groups)

        # memory per idle socket: RSS growth while K extra idle sockets are open
        await asyncio.sleep(0.5)
        before = rss_bytes(pid)
        idle = []
        for start in range(0, args.idle, 50):
            idle += await asyncio.gather(
                *(
                    driver.connect(session, i % args.sockets)
                    for i in range(start, min(args.idle, start + 50))
                )
            )
        await asyncio.sleep(1.0)
        result.idle_bytes_per_socket = (rss_bytes(pid) - before) / max(1, args.idle)
        for ws in idle:
            await ws.close()
        await asyncio.sleep(0.5)

        sockets = []
        for start in range(0, args.sockets, 50):
            sockets += await asyncio.gather(
                *(driver.connect(session, i) for i in range(start, min(args.sockets, start + 50)))
            )
        senders = {g: g for g in range(args.groups)}  # socket index g is in group g
        sent_at: dict[str, float] = {}
        own_echo: dict[int, asyncio.Queue[str]] = {g: asyncio.Queue() for g in senders}
        expected = args.messages * (args.sockets - args.groups)
        state: dict[str, Any] = {}

        async def reader(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
            is_sender = index in senders.values()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                key = driver.delivery(msg.data)
                if key is None:
                    if '"type":"resync"' in msg.data[:40]:
                        print(f"  [{name}] resync on socket {index}: {msg.data[:200]}")
                    if '"type":"error"' in msg.data[:40]:
                        state["errors"] += 1
                        if state["errors"] == 1:
                            print(f"  [{name}] error frame: {msg.data[:200]}")
                    continue
                now = time.perf_counter()
                if is_sender:
                    own_echo[index].put_nowait(key)
                    continue
                result.latencies.append(now - sent_at[key])
                state["delivered"] += 1
                state["last"] = now
                if state["delivered"] >= expected:
                    state["done"].set()

        readers = [asyncio.create_task(reader(i, ws)) for i, ws in enumerate(sockets)]

        async def sender(round_no: int, group: int) -> None:
            ws = sockets[senders[group]]
            window = asyncio.Semaphore(args.window)
            interval = 1.0 / args.rate if args.rate else 0.0

            async def release() -> None:
                while True:
                    await own_echo[senders[group]].get()
                    window.release()

            releaser = asyncio.create_task(release())
            try:
                for n in range(args.messages):
                    await window.acquire()
                    key = f"r{round_no}-g{group}-{n}"
                    sent_at[key] = time.perf_counter()
                    await ws.send_str(driver.frame(group, key, n))
                    if interval:
                        await asyncio.sleep(interval)
                # the last echoes come back before the next round starts
                for _ in range(args.window):
                    await window.acquire()
            finally:
                releaser.cancel()

        for round_no in range(args.rounds):
            state.update(delivered=0, last=0.0, errors=0, done=asyncio.Event())
            start = time.perf_counter()
            try:
                async with asyncio.timeout(args.timeout):
                    await asyncio.gather(*(sender(round_no, g) for g in senders))
                    await state["done"].wait()
            except TimeoutError:
                print(f"  [{name}] timed out: {state['delivered']}/{expected} delivered, "
                      f"{state['errors']} error frames")
            elapsed = (state["last"] or time.perf_counter()) - start
            result.deliveries += state["delivered"]
            result.elapsed += elapsed
            result.rounds.append(state["delivered"] / elapsed if elapsed else 0.0)
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return result


async def run_one(kind: str, args: argparse.Namespace) -> Result:
    port = _free_port()
    data_dir = tempfile.mkdtemp(prefix=f"sc-bench-{kind}-")
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=serve, args=(kind, port, data_dir), daemon=True)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                try:
                    path = "/health/live" if kind == "chat" else "/ws?group=x"
                    if kind == "chat":
                        async with s.get(base + path) as r:
                            if r.status == 200:
                                break
                    else:
                        ws = await s.ws_connect(base + path)
                        await ws.close()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        driver: Driver = ChatDriver(base) if kind == "chat" else BareDriver(base, args.groups)
        assert proc.pid is not None
        return await measure(kind, driver, proc.pid, args)
    finally:
        proc.terminate()
        proc.join(10)


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nchat fan-out: {args.sockets} sockets in {args.groups} groups, "
        f"{args.messages} messages per sender (window {args.window}, "
        f"rate {'max' if not args.rate else args.rate}), idle sockets {args.idle}"
    )
    print(
        f"{'server':<8}{'delivered/s':>14}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'deliveries':>12}{'idle KiB/socket':>18}"
    )
    for r in results:
        print(
            f"{r.name:<8}{r.rate:>14.0f}{r.pct(0.50):>10.2f}{r.pct(0.99):>10.2f}"
            f"{r.deliveries:>12}{r.idle_bytes_per_socket / 1024:>18.1f}"
            f"   rounds: {' / '.join(f'{x:.0f}' for x in r.rounds)}"
        )
    by = {r.name: r for r in results}
    if "chat" in by and "bare" in by and by["bare"].rate:
        chat, bare = by["chat"], by["bare"]
        bare_idle = max(1.0, bare.idle_bytes_per_socket)
        print(
            f"ratio chat/bare: delivered/s {chat.rate / bare.rate:.1%}, "
            f"p50 x{chat.pct(0.5) / bare.pct(0.5):.1f}, "
            f"p99 x{chat.pct(0.99) / bare.pct(0.99):.1f}, "
            f"idle memory x{chat.idle_bytes_per_socket / bare_idle:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200, help="per sender (one per group)")
    parser.add_argument("--window", type=int, default=16, help="messages in flight per sender")
    parser.add_argument("--rate", type=float, default=0.0, help="msgs/s per sender; 0 = max")
    parser.add_argument("--idle", type=int, default=500, help="idle sockets for the memory figure")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--rounds", type=int, default=3,
        help="load rounds per server over the same sockets; the median round is reported",
    )
    parser.add_argument("--only", choices=("chat", "bare"))
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["bare", "chat"]
    results = [asyncio.run(run_one(kind, args)) for kind in kinds]
    report(results, args)


if __name__ == "__main__":
    main()
