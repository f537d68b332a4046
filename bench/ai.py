"""AI plugin benchmark (not a test): the local provider's latency, and whether chat
stays fast while summaries run.

Starts the real app (auth, chat, ai with the local ``wordllama`` provider, model loaded
at start-up) in a child process on a file SQLite database, then from this process:

1. seeds three conversations of 50, 500 and 2,000 text messages (over REST);
2. times ``POST /v1/ai/conversations/{id}/summary`` for each (``--reps`` times; p50 and
   the slowest) and ``POST .../smart-replies`` (``--replies`` requests; p50/p99);
3. times chat sends (``POST /v1/conversations/{id}/messages``, ``--concurrency`` in
   flight, rounds of ``--round-seconds``) with no AI work (idle), then while
   ``--summarizers`` users each ask for a summary of the 2,000-message conversation at a
   fixed pace (``--summary-rate`` summaries/s offered in all, open loop) (busy); the
   rounds alternate (idle, busy, idle, busy, …). Reported: send p50/p99 per round, the
   p99 ratio busy/idle of each pair and their median; the noise (how much the idle p99
   moves from one idle round to the next); and the summaries asked, done, refused
   (503 ``ai_busy``) and failed with their throughput and latency — a "fix" that kept
   chat fast by refusing summaries shows there. The model computes in a worker process
   at idle CPU priority (``ai.local_executor = "process"``, ``local_sched_idle``), so
   the target is a ratio within the noise.

    .venv/bin/python bench/ai.py                  # about a minute
    .venv/bin/python bench/ai.py --rounds 6 --summary-rate 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPICS = ["the release", "the login bug", "the database backup", "the budget review",
          "the hiring plan", "the office move", "the customer demo", "the security audit",
          "the mobile app", "the quarterly report"]
VERBS = ["we should finish", "I can take", "who is looking at", "let's postpone",
         "I have a question about", "good progress on", "we need more time for",
         "can someone review"]


def text_of(i: int) -> str:
    return (f"{VERBS[i % len(VERBS)]} {TOPICS[(i * 7) % len(TOPICS)]} "
            f"before {['Monday', 'Wednesday', 'Friday'][i % 3]} ({i})")


# -- the server (child process) ------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, data_dir: str) -> None:
    import logging

    from secureconnect.app import create_app, freeze_after_startup
    from secureconnect.testing.helpers import make_settings

    logging.basicConfig(level=logging.WARNING)
    shipped = {"chat", "ai"}
    others = {ep.name: False for ep in entry_points(group="secureconnect")
              if ep.name not in shipped}
    settings = make_settings(
        {
            "plugins": others,
            "database": {"url": f"sqlite+aiosqlite:///{data_dir}/bench.db"},
            "rate_limits": {"enabled": False},
            "ai": {"provider": "local", "local_preload": True, "daily_requests": 10_000_000,
                   "daily_tokens": 10_000_000_000, "max_concurrent": 4},
            "logging": {"level": "WARNING"},
        },
        data_dir=data_dir,
    )
    app = create_app(settings)
    freeze_after_startup(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@contextlib.asynccontextmanager
async def server() -> AsyncIterator[tuple[str, int]]:
    port = _free_port()
    data_dir = tempfile.mkdtemp(prefix="sc-bench-ai-")
    # not daemonic: the server starts the model's worker processes itself
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(port, data_dir))
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
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the client ---------------------------------------------------------------------
class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None = None,
                   json: Any = None, expect: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.s.request(method, self.base + path, json=json, headers=headers) as r:
            body = await r.json()
            if r.status != expect:
                raise RuntimeError(f"{method} {path}: {r.status} {body}")
            return body

    async def account(self, name: str) -> tuple[str, str]:
        email = f"{name}-{time.time_ns()}@example.com"
        password = "correct horse battery staple"
        user = await self.call("POST", "/v1/auth/register", json={
            "email": email, "password": password, "display_name": name}, expect=201)
        tokens = await self.call("POST", "/v1/auth/login",
                                 json={"email": email, "password": password})
        return str(user["id"]), str(tokens["access_token"])


async def bounded(n: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> None:
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await job(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads (Linux /proc; else 0)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (the model's worker, the resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Cpu:
    """CPU seconds the server process and its children spent since the last ``take``."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.last = self.now()

    def now(self) -> tuple[float, float]:
        return (cpu_seconds(self.pid),
                sum(cpu_seconds(child) for child in children(self.pid)))

    def take(self) -> tuple[float, float]:
        now = self.now()
        spent = (now[0] - self.last[0], now[1] - self.last[1])
        self.last = now
        return spent


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(v: float) -> str:
    return f"{v * 1000:7.1f} ms"


async def run(args: argparse.Namespace) -> None:
    async with server() as (base, server_pid), aiohttp.ClientSession() as session:
        c = Client(session, base)
        (_, a_tok), (bob, b_tok) = await c.account("alice"), await c.account("bob")
        # the users asking for summaries in the busy rounds: alice and readers
        users, readers = [a_tok], []
        for k in range(1, args.summarizers):
            reader, token = await c.account(f"reader{k}")
            users.append(token)
            readers.append(reader)
        for token in users:
            await c.call("PUT", "/v1/ai/settings", token, json={"enabled": True})
        rooms: dict[int, str] = {}
        for size in (50, 500, 2000):
            conv = await c.call("POST", "/v1/conversations", a_tok, json={
                "type": "group", "name": f"size {size}", "participant_ids": [bob, *readers]},
                expect=201)
            rooms[size] = conv["id"]

            async def send(i: int, conv_id: str = conv["id"]) -> None:
                token = b_tok if i % 2 else a_tok
                await c.call("POST", f"/v1/conversations/{conv_id}/messages", token,
                             json={"content": text_of(i), "message_type": "text"},
                             expect=201)

            await bounded(size, 8, send)
        print(f"seeded conversations of {', '.join(map(str, rooms))} messages")

        print("\nlocal summary latency (model loaded at start-up), and the CPU a summary "
              "costs the server process (event loop and all) and the model's worker")
        cpu = Cpu(server_pid)
        for size, conv_id in rooms.items():
            times = []
            cpu.take()
            for _ in range(args.reps):
                t0 = time.perf_counter()
                out = await c.call("POST", f"/v1/ai/conversations/{conv_id}/summary", a_tok,
                                   json={"limit": size})
                times.append(time.perf_counter() - t0)
            server_s, worker_s = cpu.take()
            print(f"  {size:5d} messages: p50 {ms(statistics.median(times))}  "
                  f"max {ms(max(times))}  ({out['chunks']} chunks, "
                  f"{len(out['citations'])} cited, n={args.reps}); CPU a summary: server "
                  f"{ms(server_s / args.reps)}, worker {ms(worker_s / args.reps)}")

        reply_times = []
        for i in range(args.replies):
            await c.call("POST", f"/v1/conversations/{rooms[50]}/messages", b_tok,
                         json={"content": text_of(i) + "?", "message_type": "text"},
                         expect=201)
            t0 = time.perf_counter()
            await c.call("POST", f"/v1/ai/conversations/{rooms[50]}/smart-replies", a_tok,
                         json={"count": 3})
            reply_times.append(time.perf_counter() - t0)
        print(f"\nsmart replies: p50 {ms(pct(reply_times, 0.5))}  "
              f"p99 {ms(pct(reply_times, 0.99))}  (n={len(reply_times)})")

        async def send_round(seconds: float) -> list[float]:
            """Chat sends for ``seconds``, ``--concurrency`` in flight; their latencies."""
            latencies: list[float] = []
            stop = time.monotonic() + seconds

            async def sender(k: int) -> None:
                i = 0
                while time.monotonic() < stop:
                    t0 = time.perf_counter()
                    await c.call("POST", f"/v1/conversations/{rooms[50]}/messages", a_tok,
                                 json={"content": f"ping {k}.{i}", "message_type": "text"},
                                 expect=201)
                    latencies.append(time.perf_counter() - t0)
                    i += 1

            await asyncio.gather(*(sender(k) for k in range(args.concurrency)))
            return latencies

        interval = args.summarizers / args.summary_rate  # each user's period

        async def summarizer(token: str, phase: float, stats: Stats,
                             stop: asyncio.Event) -> None:
            """One user asking for a summary of the 2,000 messages every ``interval``
            seconds (open loop: a slow answer delays that user's next request only)
            until ``stop`` is set; a summary under way then still finishes."""
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), phase)
            next_at = time.monotonic()
            while not stop.is_set():
                stats.offered += 1
                t0 = time.perf_counter()
                async with session.post(
                        f"{base}/v1/ai/conversations/{rooms[2000]}/summary",
                        json={"limit": 2000},
                        headers={"Authorization": f"Bearer {token}"}) as r:
                    body = await r.json()
                    if r.status == 200:
                        stats.done.append(time.perf_counter() - t0)
                    elif r.status == 503 and body.get("code") == "ai_busy":
                        stats.refused += 1
                    else:  # a failed summary is a finding, not noise
                        stats.failed += 1
                        print(f"  summary failed: {r.status} {body}")
                next_at += interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))

        print(f"\nchat send latency: rounds of {args.round_seconds:g} s of sends, "
              f"{args.concurrency} in flight, alternating idle / busy; busy = "
              f"{args.summarizers} users each asking for a summary of the 2,000 messages "
              f"every {interval:g} s ({args.summary_rate:g} summaries/s offered in all)")
        ratios: list[float] = []
        idle_p99: list[float] = []
        idle_all: list[float] = []
        busy_all: list[float] = []
        total = Stats()
        busy_seconds = 0.0
        worker_cpu = 0.0
        for r in range(args.rounds):
            idle = await send_round(args.round_seconds)
            cpu.take()
            stats, stop = Stats(), asyncio.Event()
            loops = [asyncio.create_task(summarizer(tok, k * interval / len(users), stats,
                                                    stop))
                     for k, tok in enumerate(users)]
            t0 = time.monotonic()
            busy = await send_round(args.round_seconds)
            stop.set()
            # the summaries under way finish before the next idle round starts
            await asyncio.gather(*loops)
            busy_seconds += time.monotonic() - t0
            worker_cpu += cpu.take()[1]
            total.add(stats)
            idle_all += idle
            busy_all += busy
            idle_p99.append(pct(idle, 0.99))
            ratio = pct(busy, 0.99) / pct(idle, 0.99)
            ratios.append(ratio)
            print(f"  round {r + 1}: idle p50 {ms(pct(idle, 0.5))} p99 {ms(pct(idle, 0.99))}"
                  f" (n={len(idle)}) | busy p50 {ms(pct(busy, 0.5))} p99 "
                  f"{ms(pct(busy, 0.99))} (n={len(busy)}) | p99 ratio {ratio:.2f} | "
                  f"summaries {stats.line()}")
        noise = [max(a, b) / min(a, b) for a, b in itertools.pairwise(idle_p99)]
        print(f"  all rounds: idle p99 {ms(pct(idle_all, 0.99))}, busy p99 "
              f"{ms(pct(busy_all, 0.99))}; median p99 ratio busy/idle "
              f"{statistics.median(ratios):.2f} (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios)})")
        if noise:
            print(f"  noise: idle p99 from round to round {ms(min(idle_p99))} .. "
                  f"{ms(max(idle_p99))}; adjacent idle rounds differ by x"
                  f"{statistics.median(noise):.2f} (median), x{max(noise):.2f} (most)")
        done = len(total.done)
        print(f"  model worker CPU in busy rounds: {worker_cpu:.1f} s = "
              f"{worker_cpu / max(1, done) * 1000:.0f} ms a summary")
        print(f"  summaries in busy rounds: {total.line()}; throughput "
              f"{done / busy_seconds:.2f}/s of {args.summary_rate:g}/s offered"
              + (f"; latency p50 {ms(pct(total.done, 0.5))} p99 {ms(pct(total.done, 0.99))}"
                 if done else ""))


class Stats:
    def __init__(self) -> None:
        self.offered = 0
        self.refused = 0
        self.failed = 0
        self.done: list[float] = []

    def add(self, other: Stats) -> None:
        self.offered += other.offered
        self.refused += other.refused
        self.failed += other.failed
        self.done += other.done

    def line(self) -> str:
        return (f"{self.offered} asked, {len(self.done)} done, {self.refused} refused "
                f"(ai_busy), {self.failed} failed")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5, help="summaries per conversation size")
    p.add_argument("--replies", type=int, default=100, help="smart-reply requests")
    p.add_argument("--rounds", type=int, default=4, help="idle/busy send round pairs")
    p.add_argument("--round-seconds", type=float, default=6.0, help="seconds of one round")
    p.add_argument("--concurrency", type=int, default=4, help="chat sends in flight")
    p.add_argument("--summarizers", type=int, default=3,
                   help="users asking for summaries in busy rounds")
    p.add_argument("--summary-rate", type=float, default=1.0,
                   help="summaries per second the users ask for in all (open loop)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
