"""Chat fan-out benchmark (not a test).

Starts two servers, each in its own process, and drives the same load through each
from this process:

* ``chat``  — the real SecureConnect app (auth, WebSocket gateway, chat plugin) on a
  file SQLite database: clients send ``chat.send`` frames; every member's socket gets
  ``chat.message`` after the message is persisted.
* ``bare``  — a bare aiohttp WebSocket broadcast loop: a frame sent to a group is
  written to every socket of that group, nothing else (no auth, no persistence).

N sockets are spread over G groups; one sender per group sends M messages, keeping at
most W in flight (a message is "done" when the sender's own socket gets it back), or at
a fixed rate with ``--rate``. The load runs ``--rounds`` times over the same sockets,
the two servers' rounds alternating (bare, chat, chat, bare, ...) so that a slow or fast
spell of the machine falls on both alike. Printed for each: delivered messages/s
(deliveries to the other members' sockets; the median round, each round listed),
p50/p99 send→deliver latency over all rounds, server memory per idle socket (RSS growth
of the server process while K idle sockets are open), and the ratios: of the median
rounds, and the median ratio of rounds run one after the other.

    .venv/bin/python bench/chat_fanout.py --sockets 200 --groups 10 --messages 200

``--store postgres`` runs the chat server on a private, throwaway PostgreSQL instead
of SQLite, and ``--bus redis`` publishes through a private Redis instead of the
in-process bus (both from ``secureconnect.testing.services``; the servers are
installed by ``scripts/services/install.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
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


def chat_app(data_dir: str, database_url: str | None, redis_url: str | None) -> web.Application:
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
            "database": {"url": database_url or f"sqlite+aiosqlite:///{data_dir}/bench.db"},
            **({"redis": {"url": redis_url}} if redis_url else {}),
            "rate_limits": {"enabled": False},
            # a sender here pipelines hundreds of frames a second: measure fan-out, not
            # the per-socket inbound limit (ws.inbound_rate, 50/s by default)
            "ws": {"inbound_rate": 100_000.0, "inbound_burst": 100_000},
            "logging": {"level": "WARNING"},
        },
        data_dir=data_dir,
    )
    return create_app(settings)


def serve(kind: str, port: int, data_dir: str, database_url: str | None = None,
          redis_url: str | None = None) -> None:
    from secureconnect.app import freeze_after_startup

    app = bare_app() if kind == "bare" else chat_app(data_dir, database_url, redis_url)
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
    def __init__(self, base: str, client_ids: bool = True) -> None:
        self.base = base
        #: a unique ``client_id`` (the idempotency key) on every ``chat.send``, as every
        #: real client sends
        self.client_ids = client_ids
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
        data = {
            "conversation_id": self.conversations[group],
            "content": payload,
            "message_type": "text",
        }
        if self.client_ids:
            data["client_id"] = f"{os.getpid()}-{payload}"
        return json.dumps({"type": "chat.send", "data": data})

    def delivery(self, raw: str) -> str | None:
        # The load generator shares the box with the server: find the key the way the
        # bare driver does, without parsing the whole frame (the server writes
        # ``{"type":"chat.message","data":{...,"content":"<key>",...}}``; keys need no
        # escaping).
        if not raw.startswith('{"type":"chat.message"'):
            return None
        start = raw.index('"content":"') + 11
        return raw[start:raw.index('"', start)]


class LoadRun:
    """One server's side of the benchmark: its sockets, their readers and its rounds."""

    def __init__(self, name: str, driver: Driver, pid: int, args: argparse.Namespace) -> None:
        self.name, self.driver, self.pid, self.args = name, driver, pid, args
        self.result = Result(name)
        self.session: aiohttp.ClientSession | None = None
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.senders = {g: g for g in range(args.groups)}  # socket index g is in group g
        self.sent_at: dict[str, float] = {}
        self.own_echo: dict[int, asyncio.Queue[str]] = {g: asyncio.Queue() for g in self.senders}
        self.expected = args.messages * (args.sockets - args.groups)
        # (reset by every round; set here too, for frames that come before the first)
        self.state: dict[str, Any] = {"delivered": 0, "last": 0.0, "errors": 0,
                                      "done": asyncio.Event()}

    async def open(self) -> None:
        args, driver = self.args, self.driver
        self.session = session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            connector=aiohttp.TCPConnector(limit=0),
        )
        await driver.setup(session, args.sockets, args.groups)

        # memory per idle socket: RSS growth while K extra idle sockets are open
        await asyncio.sleep(0.5)
        before = rss_bytes(self.pid)
        idle = []
        for start in range(0, args.idle, 50):
            idle += await asyncio.gather(
                *(
                    driver.connect(session, i % args.sockets)
                    for i in range(start, min(args.idle, start + 50))
                )
            )
        await asyncio.sleep(1.0)
        self.result.idle_bytes_per_socket = (rss_bytes(self.pid) - before) / max(1, args.idle)
        for ws in idle:
            await ws.close()
        await asyncio.sleep(0.5)

        for start in range(0, args.sockets, 50):
            self.sockets += await asyncio.gather(
                *(driver.connect(session, i) for i in range(start, min(args.sockets, start + 50)))
            )
        self.readers = [asyncio.create_task(self._read(i, ws))
                        for i, ws in enumerate(self.sockets)]

    async def _read(self, index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        is_sender = index in self.senders.values()
        state, result = self.state, self.result
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            key = self.driver.delivery(msg.data)
            if key is None:
                if '"type":"resync"' in msg.data[:40]:
                    print(f"  [{self.name}] resync on socket {index}: {msg.data[:200]}")
                if '"type":"error"' in msg.data[:40]:
                    state["errors"] += 1
                    if state["errors"] == 1:
                        print(f"  [{self.name}] error frame: {msg.data[:200]}")
                continue
            now = time.perf_counter()
            if is_sender:
                self.own_echo[index].put_nowait(key)
                continue
            result.latencies.append(now - self.sent_at[key])
            state["delivered"] += 1
            state["last"] = now
            if state["delivered"] >= self.expected:
                state["done"].set()

    async def _send(self, round_no: int, group: int) -> None:
        args = self.args
        index = self.senders[group]
        ws = self.sockets[index]
        window = asyncio.Semaphore(args.window)
        interval = 1.0 / args.rate if args.rate else 0.0

        async def release() -> None:
            while True:
                await self.own_echo[index].get()
                window.release()

        releaser = asyncio.create_task(release())
        try:
            for n in range(args.messages):
                await window.acquire()
                key = f"r{round_no}-g{group}-{n}"
                self.sent_at[key] = time.perf_counter()
                await ws.send_str(self.driver.frame(group, key, n))
                if interval:
                    await asyncio.sleep(interval)
            # the last echoes come back before the next round starts
            for _ in range(args.window):
                await window.acquire()
        finally:
            releaser.cancel()

    async def round(self, round_no: int) -> None:
        state, result = self.state, self.result
        state.update(delivered=0, last=0.0, errors=0, done=asyncio.Event())
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.args.timeout):
                await asyncio.gather(*(self._send(round_no, g) for g in self.senders))
                await state["done"].wait()
        except TimeoutError:
            print(f"  [{self.name}] timed out: {state['delivered']}/{self.expected} delivered, "
                  f"{state['errors']} error frames")
        elapsed = (state["last"] or time.perf_counter()) - start
        result.deliveries += state["delivered"]
        result.elapsed += elapsed
        result.rounds.append(state["delivered"] / elapsed if elapsed else 0.0)

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        if self.session is not None:
            await self.session.close()


@contextlib.asynccontextmanager
async def server(kind: str, args: argparse.Namespace) -> AsyncIterator[tuple[str, int]]:
    """Start one server (and the services it is to use) in a child process; yields
    ``(base_url, pid)`` once it answers."""
    with contextlib.ExitStack() as services:
        database_url = redis_url = None
        if kind == "chat" and args.store == "postgres":
            from secureconnect.testing.services import PostgresServer

            database_url = services.enter_context(PostgresServer()).url
        if kind == "chat" and args.bus == "redis":
            from secureconnect.testing.services import RedisServer

            redis_url = services.enter_context(RedisServer()).url
        port = _free_port()
        data_dir = tempfile.mkdtemp(prefix=f"sc-bench-{kind}-")
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=serve, args=(kind, port, data_dir, database_url, redis_url),
                           daemon=True)
        proc.start()
        base = f"http://127.0.0.1:{port}"
        try:
            await _wait_until_up(kind, base)
            assert proc.pid is not None
            yield base, proc.pid
        finally:
            proc.terminate()
            proc.join(10)


async def _wait_until_up(kind: str, base: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                if kind == "chat":
                    async with s.get(base + "/health/live") as r:
                        if r.status == 200:
                            return
                else:
                    ws = await s.ws_connect(base + "/ws?group=x")
                    await ws.close()
                    return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the {kind} server did not come up")


async def run(kinds: list[str], args: argparse.Namespace) -> list[Result]:
    """Both servers up at once; their rounds alternate (bare, chat, chat, bare, ...) so
    that a slow or fast spell of the machine falls on both alike."""
    async with contextlib.AsyncExitStack() as stack:
        runs = []
        for kind in kinds:
            base, pid = await stack.enter_async_context(server(kind, args))
            driver: Driver = (ChatDriver(base, args.client_id) if kind == "chat"
                              else BareDriver(base, args.groups))
            load = LoadRun(kind, driver, pid, args)
            stack.push_async_callback(load.close)
            await load.open()
            runs.append(load)
        for round_no in range(args.rounds):
            for load in runs if round_no % 2 == 0 else runs[::-1]:
                await load.round(round_no)
        return [load.result for load in runs]


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\nchat fan-out: {args.sockets} sockets in {args.groups} groups, "
        f"{args.messages} messages per sender (window {args.window}, "
        f"rate {'max' if not args.rate else args.rate}), idle sockets {args.idle}; "
        f"chat on {args.store}, {args.bus} bus, "
        f"{'a unique client_id on every send' if args.client_id else 'no client_id'}"
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
        paired = sorted(c / b for c, b in zip(chat.rounds, bare.rounds, strict=True) if b)
        if paired:
            print(
                f"ratio of adjacent rounds: median {paired[len(paired) // 2]:.1%} "
                f"(min {paired[0]:.1%}, max {paired[-1]:.1%})"
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
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                        help="the chat server's database (postgres: a private instance)")
    parser.add_argument("--bus", choices=("memory", "redis"), default="memory",
                        help="the chat server's bus (redis: a private instance)")
    parser.add_argument(
        "--client-id", action=argparse.BooleanOptionalAction, default=True,
        help="a unique client_id (idempotency key) on every chat.send, as real clients "
             "send (--no-client-id to show the difference)")
    parser.add_argument(
        "--shape", choices=("small", "large", "both"), default="both",
        help="small: --sockets in --groups groups; large: one group of --large-sockets "
             "members and one sender; both: one after the other")
    parser.add_argument("--large-sockets", type=int, default=200)
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["bare", "chat"]
    shapes = ("small", "large") if args.shape == "both" else (args.shape,)
    for shape in shapes:
        run_args = argparse.Namespace(**vars(args))
        if shape == "large":
            run_args.sockets, run_args.groups = args.large_sockets, 1
        report(asyncio.run(run(kinds, run_args)), run_args)


if __name__ == "__main__":
    main()
