"""Drive throughput benchmark (not a test).

Starts two servers, each in its own process, and moves the same files through both
from this process:

* ``drive`` — the real SecureConnect app with the drive plugin on the local back end
  (file SQLite database): an upload is reserve (POST /v1/drive/files) → PUT to the
  signed URL → complete (size check); a download is GET .../download → GET the signed
  URL. Nothing is hashed (no ``sha256`` declared), like the bare server.
* ``bare``  — a bare aiohttp handler: PUT streams the body to a file, GET serves it
  with ``FileResponse``; no auth, no database.

For each size (1 MB and 50 MB by default) a round uploads ``--files`` files then
downloads them, with ``--concurrency`` transfers in flight. Rounds alternate between the
servers (bare, drive, drive, bare, ...) so a slow spell of the machine falls on both.
Printed for the data path (the PUTs and GETs of the bytes: drive's signed-URL routes
vs the bare handlers; target >= 70 %) and for the full flow (drive's reserve, complete
and download-link calls included; per-file API overhead dominates small files): MB/s
per round (median) and the median ratio drive/bare of rounds run one after the other.
Then reservations/s: ``--reservations`` POST /v1/drive/files with ``--concurrency`` in
flight (quota reserved in SQL each time).

    .venv/bin/python bench/drive.py --rounds 4
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers (child processes) --------------------------------------------------------
def bare_app(data_dir: str) -> web.Application:
    root = Path(data_dir) / "bare"
    root.mkdir(parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        path = root / str(uuid.UUID(request.match_info["name"]))
        with path.open("wb") as out:
            while chunk := await request.content.readany():
                out.write(chunk)
        return web.Response(status=200)

    async def get(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(root / str(uuid.UUID(request.match_info["name"])))

    app = web.Application()
    app.router.add_put("/blob/{name}", put)
    app.router.add_get("/blob/{name}", get)
    return app


def drive_app(data_dir: str, port: int) -> web.Application:
    import logging

    from secureconnect.app import create_app
    from secureconnect.testing.helpers import make_settings

    logging.basicConfig(level=logging.WARNING)
    shipped = {"chat", "polls", "drive"}
    others = {ep.name: False for ep in entry_points(group="secureconnect")
              if ep.name not in shipped}
    settings = make_settings({
        "plugins": others,
        "database": {"url": f"sqlite+aiosqlite:///{data_dir}/bench.db"},
        "rate_limits": {"enabled": False},
        "logging": {"level": "WARNING"},
        "drive": {"public_url": f"http://127.0.0.1:{port}", "default_quota": 1024**5,
                  "url_secret": "b" * 48},
    }, data_dir=data_dir)
    return create_app(settings)


def serve(kind: str, port: int, data_dir: str) -> None:
    from secureconnect.app import freeze_after_startup

    app = bare_app(data_dir) if kind == "bare" else drive_app(data_dir, port)
    freeze_after_startup(app)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def _wait_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(url) as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)


# -- clients ----------------------------------------------------------------------------
class Bare:
    name = "bare"

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base, self.s = base, session

    async def upload(self, data: bytes) -> str:
        name = str(uuid.uuid4())
        async with self.s.put(f"{self.base}/blob/{name}", data=io.BytesIO(data)) as r:
            assert r.status == 200, r.status
        return name

    async def download(self, name: str) -> int:
        async with self.s.get(f"{self.base}/blob/{name}") as r:
            return len(await r.read())


class Drive:
    name = "drive"

    def __init__(self, base: str, session: aiohttp.ClientSession, headers: dict[str, str]):
        self.base, self.s, self.h = base, session, headers

    async def reserve(self, size: int) -> dict[str, Any]:
        async with self.s.post(f"{self.base}/v1/drive/files", headers=self.h, json={
                "name": "bench.bin", "size": size,
                "content_type": "application/octet-stream"}) as r:
            assert r.status == 201, await r.text()
            result: dict[str, Any] = await r.json()
            return result

    async def put(self, url: str, data: bytes) -> None:
        async with self.s.put(url, data=io.BytesIO(data)) as r:
            assert r.status == 200, await r.text()

    async def complete(self, fid: str) -> None:
        async with self.s.post(f"{self.base}/v1/drive/files/{fid}/complete",
                               headers=self.h) as r:
            assert r.status == 200, await r.text()

    async def link(self, fid: str) -> str:
        async with self.s.get(f"{self.base}/v1/drive/files/{fid}/download",
                              headers=self.h) as r:
            return str((await r.json())["url"])

    async def fetch(self, url: str) -> int:
        async with self.s.get(url) as r:
            return len(await r.read())

    async def upload(self, data: bytes) -> str:
        res = await self.reserve(len(data))
        await self.put(res["upload_url"], data)
        fid = str(res["file"]["id"])
        await self.complete(fid)
        return fid

    async def download(self, fid: str) -> int:
        return await self.fetch(await self.link(fid))


async def _bounded(n: int, concurrency: int, fn: Callable[[int], Awaitable[Any]]) -> list[Any]:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with sem:
            return await fn(i)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def transfer_round(client: Any, data: bytes, files: int, concurrency: int
                         ) -> tuple[float, float]:
    """(full-flow MB/s, data-path MB/s) moved by one round of uploads then downloads.

    Full flow: everything a client does (drive: reserve, PUT, complete, download link,
    GET). Data path: only the PUTs and GETs of the bytes (drive: through the signed
    URLs; the reservations, completes and links are done outside the clock)."""
    moved = 2 * files * len(data) / MB
    if isinstance(client, Bare):
        start = time.perf_counter()
        names = await _bounded(files, concurrency, lambda _: client.upload(data))
        sizes = await _bounded(files, concurrency, lambda i: client.download(names[i]))
        assert all(n == len(data) for n in sizes)
        rate = moved / (time.perf_counter() - start)
        return rate, rate
    start = time.perf_counter()
    ids = await _bounded(files, concurrency, lambda _: client.upload(data))
    sizes = await _bounded(files, concurrency, lambda i: client.download(ids[i]))
    assert all(n == len(data) for n in sizes)
    full = moved / (time.perf_counter() - start)
    # the data path alone
    reservations = await _bounded(files, concurrency, lambda _: client.reserve(len(data)))
    t0 = time.perf_counter()
    await _bounded(files, concurrency, lambda i: client.put(reservations[i]["upload_url"], data))
    timed = time.perf_counter() - t0
    fids = [str(r["file"]["id"]) for r in reservations]
    await _bounded(files, concurrency, lambda i: client.complete(fids[i]))
    urls = await _bounded(files, concurrency, lambda i: client.link(fids[i]))
    t0 = time.perf_counter()
    sizes = await _bounded(files, concurrency, lambda i: client.fetch(urls[i]))
    timed += time.perf_counter() - t0
    assert all(n == len(data) for n in sizes)
    return full, moved / timed


async def run(args: argparse.Namespace) -> None:
    data_dir = tempfile.mkdtemp(prefix="sc-bench-drive-")
    ctx = multiprocessing.get_context("spawn")
    ports = {"bare": _free_port(), "drive": _free_port()}
    procs = {k: ctx.Process(target=serve, args=(k, p, os.path.join(data_dir, k)), daemon=True)
             for k, p in ports.items()}
    for p in procs.values():
        p.start()
    try:
        bare_base = f"http://127.0.0.1:{ports['bare']}"
        drive_base = f"http://127.0.0.1:{ports['drive']}"
        await _wait_up(f"{bare_base}/blob/{uuid.uuid4()}")
        await _wait_up(f"{drive_base}/health/live")
        timeout = aiohttp.ClientTimeout(total=600)
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as s:
            from secureconnect.testing.accounts import register_and_login

            class _Client:  # register_and_login speaks to a test-client-like object
                def __init__(self, base: str) -> None:
                    self.base = base

                def post(self, path: str, **kw: Any) -> Any:
                    return s.post(self.base + path, **kw)

                def get(self, path: str, **kw: Any) -> Any:
                    return s.get(self.base + path, **kw)

            user = await register_and_login(_Client(drive_base))
            bare, drive = Bare(bare_base, s), Drive(drive_base, s, user.headers)
            for size_mb in args.sizes:
                data = os.urandom(int(size_mb * MB))
                files = max(2, int(args.files * 1.0 / max(1.0, size_mb / 4)))
                await transfer_round(bare, data, 1, 1)  # warm-up
                await transfer_round(drive, data, 1, 1)
                full: dict[str, list[float]] = {"bare": [], "drive": []}
                path: dict[str, list[float]] = {"bare": [], "drive": []}
                full_ratios: list[float] = []
                path_ratios: list[float] = []
                for r in range(args.rounds):
                    order = (bare, drive) if r % 2 == 0 else (drive, bare)
                    pair: dict[str, tuple[float, float]] = {}
                    for client in order:
                        pair[client.name] = await transfer_round(
                            client, data, files, args.concurrency)
                        full[client.name].append(pair[client.name][0])
                        path[client.name].append(pair[client.name][1])
                    full_ratios.append(pair["drive"][0] / pair["bare"][0])
                    path_ratios.append(pair["drive"][1] / pair["bare"][1])
                print(f"{size_mb:g} MB x {files} files, concurrency {args.concurrency}:")
                for label, rates, ratios in (("data path", path, path_ratios),
                                             ("full flow", full, full_ratios)):
                    print(f"  {label}:")
                    for name in ("bare", "drive"):
                        listed = " ".join(f"{x:.0f}" for x in rates[name])
                        print(f"    {name:<6} median {statistics.median(rates[name]):8.1f} "
                              f"MB/s  (rounds: {listed})")
                    print(f"    drive/bare: median of adjacent-round ratios "
                          f"{100 * statistics.median(ratios):.0f} %")
            start = time.perf_counter()
            await _bounded(args.reservations, args.concurrency, lambda _: drive.reserve(1000))
            elapsed = time.perf_counter() - start
            print(f"reservations: {args.reservations / elapsed:.0f}/s "
                  f"({args.reservations} with {args.concurrency} in flight)")
    finally:
        for p in procs.values():
            p.terminate()
            p.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 50], help="MB")
    parser.add_argument("--files", type=int, default=16,
                        help="files per round for 1-4 MB (fewer for large sizes)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--reservations", type=int, default=500)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
