"""REST paths real clients use, against bare aiohttp in the same run (a benchmark, not a test).

Three servers, each a child process on loopback, driven by ``wrk`` (required):

* ``bare``  — aiohttp with one JSON GET and one JSON POST handler (nothing else);
* ``same``  — "same work, no framework": aiohttp that verifies the JWT with pyjwt and
  runs the same indexed query directly (sqlite3 on the same file, or asyncpg), so the
  framework's own share of the cost is visible;
* ``sc``    — the real SecureConnect app (auth, chat, polls) on a file SQLite database
  or, with ``--store postgres``, a private throwaway PostgreSQL.

Routes: authenticated ``GET /v1/users/me``, ``GET /v1/conversations``, a 50-message
history page, ``GET /v1/polls/{id}`` (each against ``bare`` GET and ``same``), and
``POST /v1/conversations/{id}/messages`` at 10 concurrent without and with a unique
``Idempotency-Key`` per request (against ``bare`` POST). Each route runs ``--rounds``
rounds, the servers alternating (bare, sc, same, then same, sc, bare, ...); the table
gives the median round of each and the median of the per-round ratios, and each
server's CPU time per request (from /proc; it hardly depends on what else the machine
runs, unlike req/s). Rate limits off, and on with generous limits
(``--rate-limits off,on``). Last, the keyed POST at a fixed rate — half the keyed
maximum just measured, and half the issue's target rate (15 % of the bare POST) —
from an open-loop aiohttp client: p50/p99/max latency.

    .venv/bin/python bench/rest.py [--store sqlite|postgres] [--seconds 3] [--rounds 3]

Short runs: ``--routes me,conversations,history,poll,post,keyed,fixed`` (a subset),
``--fixed-rates 500,1000 --fixed-seconds 5`` (the fixed-rate keyed POST at given rates,
without measuring the keyed maximum first), ``--py-spy PREFIX`` (py-spy records the
server during the first SecureConnect round of each route and each fixed-rate run:
``PREFIX-<rate limits>-<route>.txt``, raw collapsed stacks with idle samples).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JWT_SECRET = "bench-only-secret-0123456789abcdefghijklmnopqrstuvwxyz"
PASSWORD = "correct horse battery staple"

BARE = """
import sys
from aiohttp import web
async def get(request):
    return web.json_response({"hello": "world"})
async def post(request):
    body = await request.json()
    return web.json_response({"id": "x", "content": body.get("content")}, status=201)
app = web.Application()
app.router.add_get("/bench", get)
app.router.add_post("/bench", post)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

# The same reads as the app's, written directly: JWT check + one indexed query each.
SAME = r"""
import json, sys
import jwt
from aiohttp import web
port, url, secret = int(sys.argv[1]), sys.argv[2], sys.argv[3]
Q = {
 "me": "SELECT id, email, display_name, role, email_verified_at, created_at "
       "FROM users WHERE id = {0}",
 "conversations": "SELECT c.*, p.role, p.last_read_seq, c.last_seq - p.last_read_seq "
       "FROM chat_conversations c JOIN chat_participants p ON p.conversation_id = c.id "
       "AND p.user_id = {0} ORDER BY coalesce(c.last_message_at, c.created_at) DESC, "
       "c.id DESC LIMIT 50",
 "history": "SELECT * FROM chat_messages WHERE conversation_id = {1} "
       "ORDER BY seq DESC LIMIT 51",
 "poll": "SELECT p.*, o.id AS oid, o.text, (SELECT count(*) FROM poll_votes v "
       "WHERE v.poll_id = p.id AND v.option_id = o.id) FROM polls p JOIN poll_options o "
       "ON o.poll_id = p.id WHERE p.id = {1} ORDER BY o.position",
}
def claims(request):
    token = request.headers["Authorization"][7:]
    return jwt.decode(token, secret, algorithms=["HS256"], audience="secureconnect-api",
                      issuer="secureconnect", options={"require": ["exp", "sub", "sid"]})
def dump(rows):
    return [{k: (v if isinstance(v, (int, float, str, type(None))) else str(v))
             for k, v in dict(r).items()} for r in rows]
if url.startswith("sqlite"):
    import sqlite3
    db = sqlite3.connect(url.split("///", 1)[1], check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    def make(name):
        sql = Q[name].format("?", "?")
        async def handler(request):
            c = claims(request)
            args = (c["sub"],) if "{1}" not in Q[name] else (request.match_info["id"],)
            return web.json_response(dump(db.execute(sql, args).fetchall()))
        return handler
    pool = None
else:
    import asyncpg
    pool = None
    def make(name):
        sql = Q[name].format("$1", "$1")
        async def handler(request):
            c = claims(request)
            arg = c["sub"] if "{1}" not in Q[name] else request.match_info["id"]
            async with request.app["pool"].acquire() as conn:
                rows = await conn.fetch(sql, arg)
            return web.json_response(dump(rows))
        return handler
app = web.Application()
if not url.startswith("sqlite"):
    async def ctx(app):
        app["pool"] = await asyncpg.create_pool(url.replace("postgresql+asyncpg", "postgresql"),
                                                min_size=4, max_size=10)
        yield
        await app["pool"].close()
    app.cleanup_ctx.append(ctx)
app.router.add_get("/me", make("me"))
app.router.add_get("/conversations", make("conversations"))
app.router.add_get("/history/{id}", make("history"))
app.router.add_get("/poll/{id}", make("poll"))
app.router.add_get("/health", lambda r: web.json_response({}))
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""

SC = """
import json, sys
from importlib.metadata import entry_points
from aiohttp import web
from secureconnect.app import create_app, freeze_after_startup, serving_loop
from secureconnect.testing.helpers import make_settings
port, data_dir, overrides = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
shipped = {"chat", "polls"}
overrides["plugins"] = {ep.name: False for ep in entry_points(group="secureconnect")
                        if ep.name not in shipped}
settings = make_settings(overrides, data_dir=data_dir)
app = create_app(settings)
freeze_after_startup(app)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
            loop=serving_loop(settings))
"""

# wrk: a JSON body and a unique Idempotency-Key per request (thread id + counter)
POST_LUA = """
local counter = 0
local threads = 0
function setup(thread) threads = threads + 1; thread:set("tid", threads) end
wrk.method = "POST"
wrk.body = '{"content":"hello from wrk","message_type":"text"}'
wrk.headers["Content-Type"] = "application/json"
function request()
  counter = counter + 1
  if KEYED then
    wrk.headers["Idempotency-Key"] = string.format("%s-%d-%d", RUN, tid, counter)
  end
  return wrk.format()
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def child(code: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: the server exited ({proc.returncode})")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@dataclass
class Fixture:
    token: str = ""
    conversation_id: str = ""
    poll_id: str = ""


async def populate(base: str, history: int) -> Fixture:
    """Two accounts, a group conversation with ``history`` messages, a poll in it."""
    fx = Fixture()
    async with aiohttp.ClientSession() as s:
        ids, tokens = [], []
        for i in range(2):
            email = f"rest-{os.getpid()}-{i}@example.com"
            async with s.post(f"{base}/v1/auth/register", json={
                    "email": email, "password": PASSWORD, "display_name": f"rest {i}"}) as r:
                assert r.status == 201, await r.text()
                ids.append((await r.json())["id"])
            async with s.post(f"{base}/v1/auth/login",
                              json={"email": email, "password": PASSWORD}) as r:
                assert r.status == 200, await r.text()
                tokens.append((await r.json())["access_token"])
        fx.token = tokens[0]
        auth = {"Authorization": f"Bearer {fx.token}"}
        async with s.post(f"{base}/v1/conversations", headers=auth, json={
                "type": "group", "participant_ids": [ids[1]], "name": "bench"}) as r:
            assert r.status == 201, await r.text()
            fx.conversation_id = (await r.json())["id"]
        for n in range(history):
            async with s.post(f"{base}/v1/conversations/{fx.conversation_id}/messages",
                              headers=auth, json={"content": f"m{n}"}) as r:
                assert r.status == 201, await r.text()
        async with s.post(f"{base}/v1/conversations/{fx.conversation_id}/polls", headers=auth,
                          json={"question": "lunch?", "options": ["yes", "no", "later"]}) as r:
            assert r.status == 201, await r.text()
            fx.poll_id = (await r.json())["id"]
    return fx


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def wrk(url: str, seconds: float, connections: int, *, token: str | None = None,
        script: str | None = None, script_args: tuple[str, ...] = (),
        pid: int | None = None) -> tuple[float, float, float, float]:
    """req/s, p50 ms, p99 ms and the server's CPU time per request in µs (``pid``):
    the last one barely depends on what else the machine runs, unlike req/s."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "5s"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    cpu = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        print(f"    ! {url}: {bad.group(1)} non-2xx answers", flush=True)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\b", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, ms("50"), ms("99"), (cpu * 1e6 / done if done and pid else 0.0)


async def post_buckets(base: str) -> dict[float, float]:
    """The server's own latency histogram of successful message POSTs (cumulative
    count per upper bound in seconds), from /metrics."""
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    found: dict[float, float] = {}
    for m in re.finditer(r'^request_duration_seconds_bucket\{(.*)\} (\S+)$', text,
                         re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if (labels.get("method") == "POST" and labels.get("path", "").endswith("/messages")
                and labels.get("status", "").startswith("2")):
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            found[le] = found.get(le, 0.0) + float(m.group(2))
    return found


def server_p99(before: dict[float, float], after: dict[float, float]) -> str:
    """The histogram bucket holding the 99th percentile of the requests between two
    scrapes ("≤ 25 ms"): the server's own time, without the client's or the queue's."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or not delta[-1][1]:
        return "-"
    total = delta[-1][1]
    for le, count in delta:
        if count >= 0.99 * total:
            return "≤ inf" if le == float("inf") else f"≤ {le * 1000:g} ms"
    return "-"


async def fixed_rate(url: str, token: str, rate: float, seconds: float,
                     run: str, connections: int = 32) -> tuple[float, float, float, float, int]:
    """Keyed POSTs at a fixed rate (open loop: request i is due at ``i / rate`` s and its
    latency counts from then, so a stall delays the clock of every later request, as
    wrk2 does), over ``connections`` keep-alive sockets written with asyncio streams (a
    light client: the aiohttp client fell behind the rate on a loaded machine). Returns
    achieved req/s, p50, p99 and max ms, and the non-2xx count."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = b'{"content":"hello at a fixed rate","message_type":"text"}'
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode()
    total = max(1, int(rate * seconds))
    latencies: list[float] = []
    bad = 0
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = []
    for _ in range(connections):
        pair = await asyncio.open_connection(parts.hostname, parts.port)
        opened.append(pair[1])
        idle.put_nowait(pair)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int) -> None:
        nonlocal bad
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        reader, writer = await idle.get()
        writer.write(head + f"Idempotency-Key: {run}-{i}\r\n\r\n".encode() + body)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        latencies.append((loop.time() - due) * 1000)
        if not status_line.split(b" ", 2)[1].startswith(b"2"):
            bad += 1
        idle.put_nowait((reader, writer))

    await asyncio.gather(*(one(i) for i in range(total)))
    elapsed = loop.time() - start
    for writer in opened:
        writer.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return total / elapsed, pct(0.50), pct(0.99), latencies[-1], bad


@dataclass
class Row:
    route: str
    rounds: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)

    def median(self, who: str) -> tuple[float, float, float, float]:
        runs = sorted(self.rounds.get(who, []))
        return runs[len(runs) // 2] if runs else (0.0, 0.0, 0.0, 0.0)

    def cpu(self, who: str) -> float:
        """Median server CPU µs per request over the rounds."""
        runs = [r[3] for r in self.rounds.get(who, []) if r[3]]
        return statistics.median(runs) if runs else 0.0

    def ratio(self, who: str, against: str) -> float | None:
        a, b = self.rounds.get(who, []), self.rounds.get(against, [])
        pairs = [x[0] / y[0] for x, y in zip(a, b, strict=False) if y[0]]
        return statistics.median(pairs) if pairs else None


def write_lua(tmp: str, keyed: bool, run: str) -> str:
    path = Path(tmp) / f"post-{'keyed' if keyed else 'plain'}.lua"
    path.write_text(f"KEYED = {'true' if keyed else 'false'}\nRUN = '{run}'\n" + POST_LUA)
    return str(path)


async def measure_config(args: argparse.Namespace, rate_limits: str, database_url: str | None,
                         tmp: str, fixed: list[Any]) -> list[Row]:
    data_dir = tempfile.mkdtemp(prefix="sc-bench-rest-", dir=tmp)
    db_url = database_url or f"sqlite+aiosqlite:///{data_dir}/bench.db"
    overrides: dict[str, Any] = {
        "database": {"url": db_url},
        "auth": {"jwt_secret": JWT_SECRET},
        "logging": {"level": "WARNING"},
        "server": {"uvloop": args.uvloop} if args.uvloop is not None else {},
    }
    if not overrides["server"]:
        del overrides["server"]
    if args.cache is not None:
        overrides["cache"] = {"enabled": args.cache}
    generous = "1000000/second"
    if rate_limits == "off":
        overrides["rate_limits"] = {"enabled": False}
    else:
        overrides["rate_limits"] = {"enabled": True, "classes": {
            name: {"per_ip": generous, "per_user": generous}
            for name in ("default", "login", "register", "chat_send")}}
    ports = {k: free_port() for k in ("bare", "same", "sc")}
    with child(SC, str(ports["sc"]), data_dir, json.dumps(overrides)) as sc_proc:
        sc = f"http://127.0.0.1:{ports['sc']}"
        await wait_ready(sc + "/health/live", sc_proc)
        fx = await populate(sc, args.history)
        with child(BARE, str(ports["bare"])) as bare_proc, \
                child(SAME, str(ports["same"]), db_url, JWT_SECRET) as same_proc:
            bare = f"http://127.0.0.1:{ports['bare']}"
            same = f"http://127.0.0.1:{ports['same']}"
            await wait_ready(bare + "/bench", bare_proc)
            await wait_ready(same + "/health", same_proc)
            cid, pid = fx.conversation_id, fx.poll_id
            reads = [
                ("GET /v1/users/me", "/v1/users/me", "/me"),
                ("GET /v1/conversations", "/v1/conversations", "/conversations"),
                ("GET history limit=50", f"/v1/conversations/{cid}/messages?limit=50",
                 f"/history/{cid}"),
                ("GET /v1/polls/{id}", f"/v1/polls/{pid}", f"/poll/{pid}"),
            ]
            rows: list[Row] = []
            c = args.connections
            wanted = set(args.routes.split(","))
            reads = [r for r, key in zip(reads, ("me", "conversations", "history", "poll"),
                                         strict=True) if key in wanted]
            for name, sc_path, same_path in reads:
                row = Row(name)
                targets = [("bare", lambda: wrk(bare + "/bench", args.seconds, c,
                                                pid=bare_proc.pid)),
                           ("sc", lambda p=sc_path: wrk(sc + p, args.seconds, c, token=fx.token,
                                                         pid=sc_proc.pid)),
                           ("same", lambda p=same_path: wrk(same + p, args.seconds, c,
                                                             token=fx.token, pid=same_proc.pid))]
                for r in range(args.rounds):
                    for who, fn in targets if r % 2 == 0 else targets[::-1]:
                        spy = None
                        if args.py_spy and who == "sc" and r == 0:
                            spy = await py_spy(args, sc_proc.pid, args.seconds,
                                               f"{rate_limits}-{name.split()[-1][:12]}")
                        row.rounds.setdefault(who, []).append(await asyncio.to_thread(fn))
                        if spy is not None:
                            await spy.wait()
                rows.append(row)
                print(f"  {rate_limits:>3} {name:<28} done", flush=True)
            for keyed in (False, True):
                if ("keyed" if keyed else "post") not in wanted:
                    if keyed and "fixed" in wanted and args.fixed_rates:
                        await run_fixed(args, sc, fx, cid, rate_limits, fixed, {},
                                        sc_proc.pid)
                    continue
                bare_lua = write_lua(tmp, False, "bare")
                row = Row(f"POST message, {'Idempotency-Key' if keyed else 'no key'}")
                url = f"{sc}/v1/conversations/{cid}/messages"
                # (a script per round: its keys are new, not the last round's again)
                targets = [
                    ("bare", lambda b=bare_lua: wrk(bare + "/bench", args.seconds, 10,
                                                      script=b, pid=bare_proc.pid)),
                    ("sc", lambda u=url, k=keyed: wrk(
                        u, args.seconds, 10, token=fx.token, pid=sc_proc.pid,
                        script=write_lua(tmp, k, f"{os.getpid()}{rate_limits}"
                                                 f"{time.monotonic_ns()}"))),
                ]
                for r in range(args.rounds):
                    for who, fn in targets if r % 2 == 0 else targets[::-1]:
                        row.rounds.setdefault(who, []).append(await asyncio.to_thread(fn))
                rows.append(row)
                print(f"  {rate_limits:>3} {row.route:<28} done", flush=True)
                if keyed and "fixed" in wanted:
                    # p99 at half the rate: half the keyed max just measured, and half
                    # the target rate (15 % of the bare POST)
                    await run_fixed(args, sc, fx, cid, rate_limits, fixed, {
                        "half of max": row.median("sc")[0] / 2,
                        "half of target": row.median("bare")[0] * 0.15 / 2}, sc_proc.pid)
    return rows


async def py_spy(args: argparse.Namespace, pid: int, seconds: float,
                 name: str) -> asyncio.subprocess.Process:
    """py-spy recording ``pid`` for ``seconds`` (raw, with idle samples) to
    ``<--py-spy>-<name>.txt``."""
    name = re.sub(r"[^\w.-]+", "_", name)
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid),
        "-d", str(max(1, int(seconds))), "-r", "250", "-f", "raw", "--threads", "--idle",
        "-o", f"{args.py_spy}-{name}.txt",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run_fixed(args: argparse.Namespace, sc: str, fx: Fixture, cid: str,
                    rate_limits: str, fixed: list[Any], rates: dict[str, float],
                    pid: int) -> None:
    """The keyed POST at fixed rates (``--fixed-rates`` replace the measured ones);
    ``--py-spy PREFIX`` records the server during each (PREFIX-<n>.txt, raw)."""
    if args.fixed_rates:
        rates = {f"given {r}": float(r) for r in args.fixed_rates.split(",")}
    url = f"{sc}/v1/conversations/{cid}/messages"
    for n, (label, rate) in enumerate(rates.items()):
        before = await post_buckets(sc)
        seconds = args.fixed_seconds or args.seconds * 2
        spy = None
        if args.py_spy:
            spy = await py_spy(args, pid, seconds, f"{rate_limits}-fixed-{n}")
        got = await fixed_rate(url, fx.token, rate, seconds,
                               f"fixed-{os.getpid()}-{rate_limits}-{label}")
        if spy is not None:
            await spy.wait()
        inside = server_p99(before, await post_buckets(sc))
        fixed.append((rate_limits, label, rate, (*got, inside)))


def table(results: list[tuple[str, list[Row]]], args: argparse.Namespace,
          fixed: list[Any]) -> None:
    load = os.getloadavg()
    print(f"\nREST on {args.store}, wrk -t2 (GET -c{args.connections}, POST -c10), "
          f"{args.seconds:g} s x {args.rounds} rounds alternating; read cache "
          f"{'default' if args.cache is None else 'on' if args.cache else 'off'}; "
          f"load average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"{'rate limits':<11} {'route':<30}{'sc req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'bare req/s':>11}{'sc/bare':>9}{'same req/s':>11}{'sc/same':>9}"
          f"{'sc µs':>8}{'bare µs':>8}{'same µs':>8}{'cpu b/sc':>9}{'cpu s/sc':>9}")
    for rl, rows in results:
        for row in rows:
            sc, bare, same = row.median("sc"), row.median("bare"), row.median("same")
            r_bare, r_same = row.ratio("sc", "bare"), row.ratio("sc", "same")
            c_sc, c_bare, c_same = row.cpu("sc"), row.cpu("bare"), row.cpu("same")
            print(f"{rl:<11} {row.route:<30}{sc[0]:>9.0f}{sc[1]:>8.2f}{sc[2]:>8.2f}"
                  f"{bare[0]:>11.0f}{(r_bare or 0):>9.1%}"
                  + (f"{same[0]:>11.0f}{r_same:>9.1%}" if r_same is not None else
                     f"{'-':>11}{'-':>9}")
                  + f"{c_sc:>8.0f}{c_bare:>8.0f}"
                  + (f"{c_same:>8.0f}" if c_same else f"{'-':>8}")
                  + (f"{c_bare / c_sc:>9.1%}" if c_sc else f"{'-':>9}")
                  + (f"{c_same / c_sc:>9.1%}" if c_sc and c_same else f"{'-':>9}"))
    print(f"\nKeyed POST at a fixed rate (asyncio-streams client, open loop, "
          f"{args.fixed_seconds or args.seconds * 2:g} s each):")
    print(f"{'rate limits':<11} {'rate':<16}{'target/s':>9}{'got/s':>8}{'p50 ms':>8}"
          f"{'p99 ms':>8}{'max ms':>8}{'non-2xx':>8}  server p99")
    for rl, label, rate, (got, p50, p99, worst, bad, inside) in fixed:
        print(f"{rl:<11} {label:<16}{rate:>9.0f}{got:>8.0f}{p50:>8.2f}{p99:>8.2f}"
              f"{worst:>8.1f}{bad:>8}  {inside}")
    print("server p99: the bucket of the server's own request_duration_seconds holding "
          "the 99th percentile (its time in the handler chain, not the client's)")
    print("µs: the server's CPU time (all threads) per request, median of the rounds; "
          "cpu b/sc and s/sc: bare's and same-work's CPU per request over SecureConnect's "
          "(the CPU-bound ceiling of sc/bare and sc/same, nearly independent of the load)")


async def main_async(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as services, tempfile.TemporaryDirectory() as tmp:
        pg = None
        if args.store == "postgres":
            from secureconnect.testing.services import PostgresServer

            pg = services.enter_context(PostgresServer())
        results = []
        fixed: list[Any] = []
        for i, rl in enumerate(args.rate_limits.split(",")):
            # a fresh database per configuration (same server)
            url = None if pg is None else pg.create_database(f"bench_rest_{os.getpid()}_{i}")
            results.append((rl, await measure_config(args, rl, url, tmp, fixed)))
        table(results, args, fixed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64, help="for the GETs")
    parser.add_argument("--history", type=int, default=60, help="messages in the conversation")
    parser.add_argument("--rate-limits", default="off,on", help="off, on, or off,on")
    parser.add_argument("--uvloop", type=lambda v: v == "on", default=None,
                        help="on/off: the server.uvloop setting (default: the app's default)")
    parser.add_argument("--cache", type=lambda v: v == "on", default=None,
                        help="on/off: the read cache (cache.enabled; default: the app's "
                             "default, on)")
    parser.add_argument("--routes", default="me,conversations,history,poll,post,keyed,fixed",
                        help="which rows to run (comma list of me, conversations, history, "
                             "poll, post, keyed, fixed)")
    parser.add_argument("--fixed-rates", default="",
                        help="req/s for the fixed-rate keyed POST (comma list) instead of "
                             "half the measured and half the target rate")
    parser.add_argument("--fixed-seconds", type=float, default=0.0,
                        help="length of each fixed-rate run (default 2 x --seconds)")
    parser.add_argument("--py-spy", default="",
                        help="record the server with py-spy during the fixed-rate runs "
                             "(output prefix)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/rest.py needs wrk (apt-get install wrk)")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
