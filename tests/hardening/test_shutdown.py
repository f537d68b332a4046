"""SIGTERM under a burst, on a real ``secureconnect serve`` process (issue 22, item
10): the process exits well inside ``server.shutdown_timeout`` although idle
keep-alive connections, an SSE stream and a WebSocket are open, and requests sent
after the signal fail fast instead of hanging."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp

from secureconnect.testing.services import free_port

SHUTDOWN_TIMEOUT = 10.0


async def test_sigterm_under_a_burst_exits_fast_and_refuses_new_requests(tmp_path: Path):
    port = free_port()
    env = dict(os.environ, SECURECONNECT_ENV="testing",
               SECURECONNECT_SERVER__SHUTDOWN_TIMEOUT=str(SHUTDOWN_TIMEOUT),
               SECURECONNECT_APP__DATA_DIR=str(tmp_path))
    exe = Path(sys.executable).with_name("secureconnect")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--port", str(port), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 60  # a loaded machine starts slowly
            while time.monotonic() < deadline:
                try:
                    async with s.get(url + "/health/live") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            email = f"u{uuid.uuid4().hex[:10]}@example.com"
            body = {"email": email, "password": "correct-horse-battery"}
            async with s.post(url + "/v1/auth/register",
                              json={**body, "display_name": "u"}) as r:
                assert r.status == 201
            async with s.post(url + "/v1/auth/login", json=body) as r:
                headers = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
            sse = await s.get(url + "/v1/events", headers=headers)
            ws = await s.ws_connect(url + "/v1/ws", headers=headers)
            idle = aiohttp.ClientSession()
            async with idle.get(url + "/health/live") as r:
                await r.read()

            signalled: list[float] = []
            after: list[tuple[object, float]] = []
            stop = asyncio.Event()

            async def worker() -> None:
                while not stop.is_set():
                    start = time.perf_counter()
                    late = bool(signalled)
                    try:
                        async with s.get(url + "/health/ready",
                                         timeout=aiohttp.ClientTimeout(total=30)) as r:
                            await r.read()
                            outcome: object = r.status
                    except (aiohttp.ClientError, OSError) as exc:
                        outcome = type(exc).__name__
                        await asyncio.sleep(0.01)
                    if late:
                        after.append((outcome, time.perf_counter() - start))

            workers = [asyncio.create_task(worker()) for _ in range(50)]
            await asyncio.sleep(0.5)
            signalled.append(time.perf_counter())
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            exit_after = time.perf_counter() - signalled[0]
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*workers)
            await idle.close()
            sse.close()
            await ws.close()
        assert proc.returncode == 0
        assert exit_after < SHUTDOWN_TIMEOUT / 2, exit_after
        assert after, "no request was sent after the signal"
        slowest = max(seconds for _, seconds in after)
        assert slowest < 2.0, sorted(after, key=lambda a: -a[1])[:5]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
