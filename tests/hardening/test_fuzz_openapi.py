"""schemathesis over the app's own /openapi.json (issue 22, item 24): a real
``secureconnect serve`` process, authenticated and not, a fixed seed and a bounded
budget; 0 server errors and 0 schema/status violations.

Deliberate exceptions (excluded checks), each with its reason:
* ``positive_data_acceptance`` (ST202): the request models do not yet state every rule
  the services apply from settings (password and display-name policy, email syntax,
  chat message types and sizes, poll limits); such requests get a documented 422.
* ``ensure_resource_availability`` (ST302): its stateful links pair a created
  conversation with message ids of other conversations, which are 404 by design.
* Authenticated run: ``/v1/auth/logout``, ``DELETE /v1/users/me`` and the
  password-reset routes are left out, as they end (or mail) the fuzzing session.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest

from secureconnect.testing.services import free_port

pytestmark = pytest.mark.slow

SEED = 1
EXAMPLES = int(os.environ.get("SC_FUZZ_EXAMPLES", "5"))
EXCLUDED = "positive_data_acceptance,ensure_resource_availability"
SESSION_ENDING = ("/v1/auth/logout", "/v1/users/me", "/v1/auth/password-reset")


def _schemathesis() -> str:
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        found = shutil.which("schemathesis")
        if found is None:
            pytest.fail("schemathesis is not installed (pip install -e '.[fuzz]')")
        return found
    return str(exe)


async def _serve(tmp_path: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    env = dict(os.environ, SECURECONNECT_ENV="testing",
               SECURECONNECT_APP__DATA_DIR=str(tmp_path),
               SECURECONNECT_DATABASE__URL="sqlite+aiosqlite:///{data_dir}/fuzz.db")
    exe = Path(sys.executable).with_name("secureconnect")
    proc = await asyncio.create_subprocess_exec(
        str(exe), "serve", "--port", str(port), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 60  # a loaded machine starts slowly
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/health/live") as r:
                    if r.status == 200:
                        return proc, url
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    proc.kill()
    pytest.fail("the server did not start")


async def _token(url: str) -> str:
    body = {"email": f"fuzz{uuid.uuid4().hex[:8]}@example.com",
            "password": "correct-horse-battery"}
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/v1/auth/register", json={**body, "display_name": "f"}) as r:
            assert r.status == 201
        async with s.post(url + "/v1/auth/login", json=body) as r:
            return str((await r.json())["access_token"])


@pytest.mark.parametrize("authenticated", [False, True], ids=["anonymous", "authenticated"])
async def test_openapi_fuzzing_finds_nothing(tmp_path: Path, authenticated: bool) -> None:
    proc, url = await _serve(tmp_path)
    try:
        args = [_schemathesis(), "run", f"{url}/openapi.json", "--seed", str(SEED),
                "-n", str(EXAMPLES), "--checks", "all", "--exclude-checks", EXCLUDED,
                "--no-color"]
        if authenticated:
            args += ["-H", f"Authorization: Bearer {await _token(url)}"]
            for path in SESSION_ENDING:
                args += ["--exclude-path", path]
        # (cwd: schemathesis keeps its cache of failures in .schemathesis/ there)
        run = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
        out, _ = await asyncio.wait_for(run.communicate(), 600)
        text = out.decode(errors="replace")
        assert run.returncode == 0, text[-6000:]
        assert " passed" in text and "Server error" not in text
    finally:
        proc.kill()
        await proc.wait()
