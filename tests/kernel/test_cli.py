"""The `secureconnect` command, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "secureconnect.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SECURECONNECT_ENV": "testing", **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=full_env, cwd=ROOT)


def test_check_config_redacts_and_succeeds():
    r = run_cli("check-config", "--json", env={"SECURECONNECT_METRICS__TOKEN": "hunter2"})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["metrics"]["token"] == "***"
    assert "hunter2" not in r.stdout


def test_misspelt_setting_exits_non_zero_naming_the_key():
    r = run_cli("check-config", env={"SECURECONNECT_HTTP__REQUEST_TIMOUT": "5"})
    assert r.returncode == 2
    assert "http.request_timout" in r.stderr and "did you mean" in r.stderr


def test_disabling_essential_plugin_exits_non_zero():
    r = run_cli("check-config", env={"SECURECONNECT_PLUGINS__WS": "false"})
    assert r.returncode == 2
    assert "plugins.ws" in r.stderr and "essential" in r.stderr


def test_plugins_lists_enabled_and_disabled():
    r = run_cli("plugins", "--json", env={"SECURECONNECT_PLUGINS__EXAMPLE": "false"})
    assert r.returncode == 0, r.stderr
    plugins = {p["name"]: p for p in json.loads(r.stdout)}
    assert plugins["core"]["essential"] and plugins["core"]["enabled"]
    assert plugins["example"]["enabled"] is False
    assert "sc_routes" in plugins["core"]["hooks"]
    text = run_cli("plugins").stdout
    assert "example" in text and "1.2.3" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
def test_make_run_serves_the_embedded_defaults(tmp_path):
    """`make run` (the README quick start) serves; ready, metrics and OpenAPI answer."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = _free_port()
    env = {**os.environ, "SECURECONNECT_APP__DATA_DIR": str(tmp_path),
           "SECURECONNECT_ENV": "development"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "run", f"PORT={port}", f"VENV={Path(sys.prefix)}"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/health/ready")
                if status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"request_duration_seconds" in body
        status, body = _get(f"http://127.0.0.1:{port}/openapi.json")
        assert status == 200 and json.loads(body)["openapi"] == "3.1.0"
        status, body = _get(f"http://127.0.0.1:{port}/")
        assert status == 200 and b'src="/static/web/main.js"' in body
        printed = log.read_text()
        assert f"web client: http://127.0.0.1:{port}/" in printed
        assert f"API docs:                 http://127.0.0.1:{port}/docs" in printed
    finally:
        # make and the server it started share a new process group: stop both
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
