"""Call signaling benchmark (not a test): a mesh join burst while chat load runs.

One SecureConnect server (auth, gateway, chat, video) runs in a child process on a file
SQLite database (``--store postgres``: a private PostgreSQL; ``--bus redis``: a private
Redis). This process drives it:

* ``--participants`` users (40) in one group conversation; the first starts a call and
  the others join it at once (the join burst: concurrent ``POST /v1/calls/{id}/join``).
* Every pair then signals as in a mesh: the lower index sends ``call.offer``, the other
  answers with ``call.answer`` when the offer arrives, and both send ``--candidates``
  ``call.ice`` frames to each other (40 participants: 780 pairs, 4,680 relays with 2
  candidates each way). Each relayed frame carries its send time (in the SDP / the
  candidate's ``usernameFragment``); latency is send → arrival at the addressed socket.
* Each round runs the burst twice over the same sockets, ``quiet`` (signaling only) and
  ``loaded`` (while the ``--chat-members`` users of another conversation send
  ``chat.send`` at ``--chat-rate`` messages/s in total), their order alternating round
  by round (``--rounds``) so a slow spell of the machine falls on both alike.

Printed per phase: join burst p50/p99, relay p50/p99/max latency, completeness
(relays that reached their target / relays sent, plus any relay delivered to the wrong
socket), chat messages delivered; then the loaded/quiet p99 ratio of adjacent phases
and the median round's p99 (the target: <= 300 ms under chat load).

    .venv/bin/python bench/call_signaling.py --participants 40
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
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

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def video_app(data_dir: str, database_url: str | None, redis_url: str | None
              ) -> web.Application:
    import logging

    from secureconnect.app import create_app
    from secureconnect.testing.helpers import make_settings

    logging.basicConfig(level=logging.WARNING)
    shipped = {"chat", "polls", "video"}
    others = {ep.name: False for ep in entry_points(group="secureconnect")
              if ep.name not in shipped}
    settings = make_settings(
        {
            "plugins": others,
            "database": {"url": database_url or f"sqlite+aiosqlite:///{data_dir}/bench.db"},
            **({"redis": {"url": redis_url}} if redis_url else {}),
            "rate_limits": {"enabled": False},
            "ws": {"inbound_rate": 100_000.0, "inbound_burst": 100_000},
            "video": {"max_participants": 100, "ring_timeout": 600},
            "logging": {"level": "WARNING"},
        },
        data_dir=data_dir,
    )
    return create_app(settings)


def serve(port: int, data_dir: str, database_url: str | None, redis_url: str | None) -> None:
    from secureconnect.app import freeze_after_startup

    app = video_app(data_dir, database_url, redis_url)
    freeze_after_startup(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                handle_signals=True)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when ``pid`` is None)."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.asynccontextmanager
async def server(args: argparse.Namespace) -> AsyncIterator[tuple[str, int]]:
    with contextlib.ExitStack() as services:
        database_url = redis_url = None
        if args.store == "postgres":
            from secureconnect.testing.services import PostgresServer

            database_url = services.enter_context(PostgresServer()).url
        if args.bus == "redis":
            from secureconnect.testing.services import RedisServer

            redis_url = services.enter_context(RedisServer()).url
        port = _free_port()
        data_dir = tempfile.mkdtemp(prefix="sc-bench-calls-")
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=serve, args=(port, data_dir, database_url, redis_url),
                           daemon=True)
        proc.start()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as s:
                for _ in range(300):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with s.get(base + "/health/live") as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.1)
                else:
                    raise RuntimeError("the server did not come up")
            assert proc.pid is not None
            yield base, proc.pid
        finally:
            proc.terminate()
            proc.join(10)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class User:
    user_id: str
    token: str
    ws: aiohttp.ClientWebSocketResponse | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Phase:
    name: str
    joins: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    misdelivered: int = 0
    refused: int = 0
    chat_sent: int = 0
    chat_delivered: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    driver_cpu: float = 0.0


class Bench:
    def __init__(self, base: str, pid: int, session: aiohttp.ClientSession,
                 args: argparse.Namespace) -> None:
        self.base, self.pid, self.session, self.args = base, pid, session, args
        self.people: list[User] = []
        self.chatters: list[User] = []
        self.call_cid = self.chat_cid = ""
        self.phase = Phase("setup")
        self.done = asyncio.Event()
        self.expected = 0
        self.readers: list[asyncio.Task[None]] = []
        self.index: dict[str, int] = {}
        self.pending: set[asyncio.Task[None]] = set()

    async def account(self, i: int) -> User:
        email = f"calls-{os.getpid()}-{i}@example.com"
        body = {"email": email, "password": "correct horse battery staple",
                "display_name": f"caller {i}"}
        async with self.session.post(f"{self.base}/v1/auth/register", json=body) as r:
            user = await r.json()
            assert r.status == 201, user
        async with self.session.post(f"{self.base}/v1/auth/login",
                                     json={"email": email, "password": body["password"]}) as r:
            tokens = await r.json()
            assert r.status == 200, tokens
        return User(str(user["id"]), str(tokens["access_token"]))

    async def group(self, owner: User, members: list[User]) -> str:
        async with self.session.post(
                f"{self.base}/v1/conversations", headers=owner.headers,
                json={"type": "group", "name": "bench",
                      "participant_ids": [m.user_id for m in members]}) as r:
            body = await r.json()
            assert r.status == 201, body
        return str(body["id"])

    async def setup(self) -> None:
        a = self.args
        total = a.participants + a.chat_members
        users: list[User] = []
        for start in range(0, total, 20):
            users += await asyncio.gather(*(self.account(i)
                                            for i in range(start, min(total, start + 20))))
        self.people, self.chatters = users[:a.participants], users[a.participants:]
        self.index = {u.user_id: i for i, u in enumerate(self.people)}
        self.call_cid = await self.group(self.people[0], self.people[1:])
        self.chat_cid = await self.group(self.chatters[0], self.chatters[1:])
        for i, u in enumerate(users):
            u.ws = await self.session.ws_connect(f"{self.base}/v1/ws", headers=u.headers)
            self.readers.append(asyncio.ensure_future(
                self.read(u, i if i < a.participants else -1)))

    async def read(self, user: User, index: int) -> None:
        assert user.ws is not None
        async for msg in user.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            raw = msg.data
            if raw.startswith('{"type":"chat.message"'):
                self.phase.chat_delivered += 1
                continue
            if not raw.startswith('{"type":"call.'):
                if raw.startswith('{"type":"error"'):
                    self.phase.refused += 1
                continue
            frame = json.loads(raw)
            kind, data = frame["type"], frame["data"]
            if kind not in ("call.offer", "call.answer", "call.ice"):
                continue
            now = time.perf_counter()
            if data.get("to_user_id") != user.user_id:
                self.phase.misdelivered += 1
                continue
            if kind == "call.ice":
                sent_at = float(data["candidate"]["usernameFragment"])
            else:
                sent_at = float(data["sdp"].rsplit("a=x-sent:", 1)[1].split("\r\n", 1)[0])
            self.phase.latencies.append((now - sent_at) * 1000)
            self.phase.received += 1
            if kind == "call.offer":  # answer, then our candidates
                task = asyncio.ensure_future(self.respond(
                    index, self.index[data["from_user_id"]], data["call_id"]))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
            if self.phase.received >= self.expected:
                self.done.set()

    async def signal(self, sender: int, target: int, call_id: str, kind: str,
                     n: int = 0) -> None:
        ws = self.people[sender].ws
        assert ws is not None
        data: dict[str, Any] = {"call_id": call_id,
                                "to_user_id": self.people[target].user_id}
        stamp = repr(time.perf_counter())
        if kind == "ice":
            data["candidate"] = {
                "candidate": f"candidate:{n} 1 udp 2122260223 10.0.0.{sender % 250} "
                             f"{5000 + target} typ host",
                "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": stamp}
        else:
            data["sdp"] = f"{SDP}a=x-sent:{stamp}\r\n"
        self.phase.sent += 1
        await ws.send_str(json.dumps({"type": f"call.{kind}", "data": data}))

    async def respond(self, me: int, caller: int, call_id: str) -> None:
        await self.signal(me, caller, call_id, "answer")
        for n in range(self.args.candidates):
            await self.signal(me, caller, call_id, "ice", n)

    async def offer(self, me: int, call_id: str) -> None:
        for other in range(me + 1, len(self.people)):
            await self.signal(me, other, call_id, "offer")
            for n in range(self.args.candidates):
                await self.signal(me, other, call_id, "ice", n)

    async def chat_load(self, stop: asyncio.Event) -> None:
        if not self.chatters or self.args.chat_rate <= 0:
            return
        period = 1.0 / self.args.chat_rate
        n = 0
        while not stop.is_set():
            sender = self.chatters[n % len(self.chatters)]
            assert sender.ws is not None
            await sender.ws.send_str(json.dumps({"type": "chat.send", "data": {
                "conversation_id": self.chat_cid, "content": f"load {n}",
                "message_type": "text"}}))
            self.phase.chat_sent += 1
            n += 1
            await asyncio.sleep(period)

    async def join(self, user: User, call_id: str) -> None:
        started = time.perf_counter()
        async with self.session.post(f"{self.base}/v1/calls/{call_id}/join",
                                     headers=user.headers) as r:
            body = await r.json()
            assert r.status == 200, body
        self.phase.joins.append((time.perf_counter() - started) * 1000)

    async def run_phase(self, name: str, loaded: bool) -> Phase:
        self.phase = Phase(name)
        self.done.clear()
        n = len(self.people)
        self.expected = n * (n - 1) // 2 * (2 + 2 * self.args.candidates)
        stop = asyncio.Event()
        load = asyncio.ensure_future(self.chat_load(stop)) if loaded else None
        if loaded:
            await asyncio.sleep(1.0)  # the chat load is running before the burst
        started = time.perf_counter()
        cpu = (cpu_seconds(self.pid), cpu_seconds())
        owner = self.people[0]
        async with self.session.post(f"{self.base}/v1/conversations/{self.call_cid}/calls",
                                     json={"type": "video"}, headers=owner.headers) as r:
            call = await r.json()
            assert r.status == 201, call
        call_id = str(call["id"])
        await asyncio.gather(*(self.join(u, call_id) for u in self.people[1:]))
        await asyncio.gather(*(self.offer(i, call_id) for i in range(n)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout=self.args.timeout)
        self.phase.seconds = time.perf_counter() - started
        self.phase.server_cpu = cpu_seconds(self.pid) - cpu[0]
        self.phase.driver_cpu = cpu_seconds() - cpu[1]
        stop.set()
        if load is not None:
            await load
        async with self.session.post(f"{self.base}/v1/calls/{call_id}/end",
                                     headers=owner.headers) as r:
            assert r.status == 200, await r.text()
        await asyncio.sleep(0.5)  # let the last chat deliveries land in this phase
        return self.phase

    async def close(self) -> None:
        for u in (*self.people, *self.chatters):
            if u.ws is not None:
                await u.ws.close()
        for task in self.readers:
            task.cancel()


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    n = args.participants
    print(f"call signaling: {n} participants, {n * (n - 1) // 2} pairs, "
          f"{args.candidates} candidates each way, store={args.store}, bus={args.bus}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for p in phases:
        complete = p.received / p.sent if p.sent else 0.0
        print(f"  {p.name:>6}: join burst p50 {pct(p.joins, .5):.0f} ms p99 "
              f"{pct(p.joins, .99):.0f} ms | relay p50 {pct(p.latencies, .5):.1f} ms "
              f"p99 {pct(p.latencies, .99):.1f} ms max {max(p.latencies, default=0):.1f} ms"
              f" | {p.received}/{p.sent} relayed ({complete:.2%}), {p.misdelivered} "
              f"misdelivered, {p.refused} refused | chat {p.chat_sent} sent, "
              f"{p.chat_delivered} delivered | {p.seconds:.1f} s, CPU server "
              f"{p.server_cpu:.1f} s driver {p.driver_cpu:.1f} s")
    quiet = [p for p in phases if p.name == "quiet"]
    loaded = [p for p in phases if p.name == "loaded"]
    ratios = [pct(b.latencies, .99) / pct(a.latencies, .99)
              for a, b in zip(quiet, loaded, strict=False)]
    if ratios:
        print(f"  loaded/quiet relay p99 ratio of adjacent rounds: median "
              f"{statistics.median(ratios):.2f} ({', '.join(f'{r:.2f}' for r in ratios)})")
    for name, group in (("quiet", quiet), ("loaded", loaded)):
        if group:
            every = [v for p in group for v in p.latencies]
            print(f"  {name} over all rounds: relay p50 {pct(every, .5):.1f} ms "
                  f"p99 {pct(every, .99):.1f} ms, median round p99 "
                  f"{statistics.median(pct(p.latencies, .99) for p in group):.1f} ms, "
                  f"completeness {sum(p.received for p in group)}/"
                  f"{sum(p.sent for p in group)}")
    target = statistics.median(pct(p.latencies, .99) for p in loaded) if loaded else 0.0
    print(f"  target: median round p99 <= 300 ms under chat load: "
          f"{'met' if target <= 300 else 'MISSED'} ({target:.1f} ms)")


async def main_async(args: argparse.Namespace) -> None:
    async with server(args) as (base, pid), aiohttp.ClientSession() as session:
        bench = Bench(base, pid, session, args)
        await bench.setup()
        try:
            phases = []
            for round_no in range(args.rounds):  # quiet, loaded, loaded, quiet, ...
                order = [False, True] if round_no % 2 == 0 else [True, False]
                for loaded in order:
                    phases.append(await bench.run_phase("loaded" if loaded else "quiet",
                                                        loaded))
        finally:
            await bench.close()
    report(phases, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--participants", type=int, default=40)
    p.add_argument("--candidates", type=int, default=2, help="ICE frames each way per pair")
    p.add_argument("--chat-members", type=int, default=20)
    p.add_argument("--chat-rate", type=float, default=200.0, help="chat messages/s in total")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait per phase")
    p.add_argument("--rounds", type=int, default=3, help="quiet+loaded pairs, alternating")
    p.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--bus", choices=("memory", "redis"), default="memory")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
