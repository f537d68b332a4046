"""`secureconnect new-plugin` writes a package whose own tests pass as generated, and
`secureconnect serve --plugins-dir` loads single-file plugins."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secureconnect.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**os.environ, **(env or {})})


def test_new_plugin_scaffold_passes_its_own_tests(tmp_path):
    r = cli("new-plugin", "greeter", "--dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    root = tmp_path / "sc-greeter"
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["secureconnect"] == {"greeter": "sc_greeter"}
    source = (root / "sc_greeter" / "__init__.py").read_text()
    for hook in ("sc_routes", "sc_ws_handlers", "sc_jobs", "sc_settings_validators"):
        assert f"def {hook}(" in source
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=300, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout
    # a second time, or a bad name: one line, no traceback
    again = cli("new-plugin", "greeter", "--dir", str(tmp_path))
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    bad = cli("new-plugin", "Bad-Name", "--dir", str(tmp_path))
    assert bad.returncode == 2 and "lower-case" in bad.stderr


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
    except OSError:
        return 0, b""


def test_serve_plugins_dir_loads_single_file_plugins(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hello_dev.py").write_text('''
from aiohttp import web
from dynaconf import Validator
from secureconnect import RouteTable, hookimpl, kernel_of
from secureconnect.http.handlers import json_response

routes = RouteTable(tag="dev")

@routes.get("/v1/hello-dev", auth=False)
async def hello(request: web.Request) -> web.StreamResponse:
    return json_response({"hello": kernel_of(request).settings.hello_dev.word})

@hookimpl
def sc_settings_validators():
    return [Validator("hello_dev.word", is_type_of=str, default="from a file")]

@hookimpl
def sc_routes(kernel):
    return routes
''')
    (plugins / "_private.py").write_text("raise RuntimeError('never imported')\n")
    port = _free_port()
    env = {**os.environ, "SECURECONNECT_ENV": "testing",
           "SECURECONNECT_APP__DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "secureconnect.cli", "serve", "--port",
                             str(port), "--plugins-dir", str(plugins)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            status, body = _get(f"http://127.0.0.1:{port}/v1/hello-dev")
            if status == 200:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert json.loads(body) == {"hello": "from a file"}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    # a file that fails to import: one line naming it
    (plugins / "broken.py").write_text("import no_such_module_here\n")
    r = cli("serve", "--plugins-dir", str(plugins), cwd=tmp_path, env=env)
    assert r.returncode == 2 and "broken.py failed to import" in r.stderr
    assert "Traceback" not in r.stderr
