"""The per-user quota override, set by the admin command against the app's database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECURECONNECT_ENV": "testing",
           "SECURECONNECT_APP__DATA_DIR": str(tmp_path),
           "SECURECONNECT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/drive-test.db"}
    return subprocess.run([sys.executable, "-m", "secureconnect_plugins.drive.cli", *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


async def test_quota_override_by_admin_command(make_drive: Any, tmp_path: Path) -> None:
    d = await make_drive("local")
    alice = await d.user()
    r = await asyncio.to_thread(_cli, tmp_path, "quota", alice.user_id, "--limit", "1KiB")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"user_id": alice.user_id, "used": 0, "limit": 1024}
    assert await d.quota(alice) == {"used": 0, "limit": 1024}
    body = await d.reserve(alice, 1025, status=507)
    assert (body["used"], body["limit"]) == (0, 1024)
    await d.reserve(alice, 1024)

    r = await asyncio.to_thread(_cli, tmp_path, "quota", alice.user_id, "--default")
    assert r.returncode == 0, r.stderr
    assert await d.quota(alice) == {"used": 1024, "limit": 10 * 1024**3}
    bad = await asyncio.to_thread(_cli, tmp_path, "quota", "nobody", "--limit", "1")
    assert bad.returncode == 2 and "not a user id" in bad.stderr
