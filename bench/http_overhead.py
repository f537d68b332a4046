"""Kernel HTTP overhead against bare aiohttp, in one run (a benchmark, not a test).

Starts two servers as child processes on loopback — a bare aiohttp app with one JSON
route, and SecureConnect (full pipeline: request id, metrics, problem errors, CORS,
body limit, timeout, route wrapper) with an equivalent plugin route — and drives each
with the same closed-loop client. Prints requests/s, p50/p99 latency and the ratio.

    .venv/bin/python bench/http_overhead.py [--seconds 5] [--concurrency 32]

The load comes from `wrk` (Debian package) when it is installed — a Python client
saturates before either server does — and from an aiohttp client otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

import aiohttp

BARE = """
import sys
from aiohttp import web
async def hello(request):
    return web.json_response({"hello": "world"})
app = web.Application()
app.router.add_get("/bench", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

KERNEL = """
import sys
from aiohttp import web
from secureconnect import RouteTable, hookimpl
from secureconnect.app import create_app
from secureconnect.http.handlers import json_response
from secureconnect.testing import make_settings
routes = RouteTable()
@routes.get("/bench", auth=False, rate_limit="none")
async def hello(request):
    return json_response({"hello": "world"})
class Bench:
    PLUGIN_NAME = "bench"
    @hookimpl
    def sc_routes(self):
        return routes
settings = make_settings({"plugins": {"example": False}} if "--no-example" in sys.argv else None)
app = create_app(settings, plugins=[Bench()])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


async def drive(url: str, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                async with session.get(url) as r:
                    await r.read()
                    assert r.status == 200, r.status
                latencies.append(time.perf_counter() - t0)

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
    return len(latencies) / elapsed, latencies


def wrk(url: str, seconds: float, concurrency: int) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, int(seconds))}s", "--latency", url],
        capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        assert m, out
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return rps, ms("50"), ms("99")


def measure(name: str, code: str, args: argparse.Namespace) -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", code, str(port), "--no-example"])
    try:
        url = f"http://127.0.0.1:{port}/bench"
        asyncio.run(wait_ready(url))
        if shutil.which("wrk"):
            wrk(url, 1, args.concurrency)  # warm-up
            rps, p50, p99 = wrk(url, args.seconds, args.concurrency)
        else:
            asyncio.run(drive(url, 1.0, args.concurrency))  # warm-up
            rps, lat = asyncio.run(drive(url, args.seconds, args.concurrency))
            q = statistics.quantiles(lat, n=100)
            p50, p99 = q[49] * 1000, q[98] * 1000
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"{name:<14} {rps:>9.0f} req/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
    return rps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    print(f"GET /bench, {args.concurrency} concurrent clients, {args.seconds:g} s each")
    bare = measure("bare aiohttp", BARE, args)
    kernel = measure("secureconnect", KERNEL, args)
    print(f"ratio secureconnect / bare aiohttp: {kernel / bare:.2f}")


if __name__ == "__main__":
    main()
