"""docs/quickstart.md runs as written: every `sh` block, in order, in one bash against
a server started from an empty directory in the development environment."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("jq")),
                    reason="the quick start uses curl and jq")
def test_quickstart_runs_as_written(tmp_path):
    doc = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", doc, re.S)
    assert len(blocks) >= 6
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECONNECT_")}
    env.update({"SECURECONNECT_ENV": "development",
                "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}"})
    server = subprocess.Popen([sys.executable, "-m", "secureconnect.cli", "serve",
                               "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"{base}/health/ready"):
            assert server.poll() is None, server.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.2)
        script = "set -euo pipefail\n" + "\n".join(blocks)
        run = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env={**env, "SC": base})
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout.splitlines()
    assert out[0] == "ok"
    for expected in ("alice", "hello Bob", "bob", "bob got: are you there?", "pizza: 1",
                     "salad: 0"):
        assert expected in out, (expected, out)
    assert any(re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", line) for line in out), out
