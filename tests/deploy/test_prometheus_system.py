"""System test: Debian's Prometheus scrapes a served SecureConnect on loopback with the
shipped alert rules; the breaker-open alert fires when a dependency stops and clears
when it returns. The app's `job` label reaches Prometheus as `exported_job` (the rules
rely on it).

The dependency is a plain HTTP server (``python -m http.server``) that a single-file
plugin (``--plugins-dir``) calls through ``kernel.breaker("upstream")``. The rules are
the shipped ones with every ``for:`` shortened to 1 s so the test takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus missing: scripts/services/"
                                                  "install.sh installs Debian's package"),
]

PLUGIN = '''
import aiohttp
from aiohttp import web
from secureconnect import RouteTable, hookimpl, kernel_of
from secureconnect.http.handlers import json_response

routes = RouteTable(tag="upstream")

@routes.get("/v1/upstream/call", auth=False, rate_limit="none")
async def call(request: web.Request) -> web.StreamResponse:
    kernel = kernel_of(request)
    async with kernel.breaker("upstream"):
        async with kernel.http.get(URL, timeout=aiohttp.ClientTimeout(total=1)) as r:
            r.raise_for_status()
    return json_response({"ok": True})

@hookimpl
def sc_routes(kernel):
    return routes
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.25)


@contextmanager
def _process(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **kw)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_breaker_open_alert_fires_and_clears(tmp_path):
    upstream_port, app_port, prom_port = _free_port(), _free_port(), _free_port()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "upstream.py").write_text(
        f'URL = "http://127.0.0.1:{upstream_port}/"\n' + PLUGIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECURECONNECT_")}
    env.update({"SECURECONNECT_ENV": "testing",
                "SECURECONNECT_RESILIENCE__FAILURE_THRESHOLD": "2",
                "SECURECONNECT_RESILIENCE__RESET_TIMEOUT": "1",
                "SECURECONNECT_JOBS__ENABLED": "true"})  # the reaper runs at start
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "alerts.yml")],
        "scrape_configs": [{"job_name": "secureconnect",
                            "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
    }))
    app = f"http://127.0.0.1:{app_port}"
    prom = f"http://127.0.0.1:{prom_port}"

    def upstream() -> Any:
        return _process([sys.executable, "-m", "http.server", str(upstream_port),
                         "--bind", "127.0.0.1"], cwd=tmp_path)

    def breaker_alerts() -> list[dict[str, Any]]:
        status, body = _get(f"{prom}/api/v1/alerts")
        if status != 200:
            return []
        return [a for a in json.loads(body)["data"]["alerts"]
                if a["labels"].get("alertname") == "SecureConnectCircuitBreakerOpen"
                and a["labels"].get("service") == "upstream"]

    with _process([sys.executable, "-m", "secureconnect.cli", "serve", "--port",
                   str(app_port), "--plugins-dir", str(plugins)], cwd=tmp_path, env=env), \
         _process([str(PROMETHEUS), f"--config.file={tmp_path / 'prometheus.yml'}",
                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                   f"--web.listen-address=127.0.0.1:{prom_port}"], cwd=tmp_path):
        _wait(lambda: _get(f"{app}/health/ready")[0] == 200, 60, "the app")

        def job_series() -> list[dict[str, str]]:
            query = urllib.parse.quote('job_runs_total{exported_job="video.reap"}')
            status, body = _get(f"{prom}/api/v1/query?query={query}")
            return [r["metric"] for r in json.loads(body)["data"]["result"]] \
                if status == 200 else []

        # video.reap runs at start; scraped, its job label is renamed, the target's kept
        series = _wait(job_series, 60, "the reaper's job_runs_total in Prometheus")
        assert series[0]["job"] == "secureconnect", series
        with upstream():
            _wait(lambda: _get(f"{app}/v1/upstream/call")[0] == 200, 30, "upstream calls")
        # the dependency is gone: calls fail, the breaker opens, the alert fires
        for _ in range(3):
            _get(f"{app}/v1/upstream/call")
        assert _get(f"{app}/v1/upstream/call")[0] == 503
        firing = _wait(lambda: [a for a in breaker_alerts() if a["state"] == "firing"], 60,
                       "the breaker-open alert to fire")
        assert firing[0]["labels"]["severity"] == "critical"
        # it returns: a trial call closes the breaker and the alert clears
        with upstream():
            _wait(lambda: _get(f"{app}/v1/upstream/call")[0] == 200, 30,
                  "calls to succeed again")
            _wait(lambda: not breaker_alerts(), 60, "the alert to clear")
