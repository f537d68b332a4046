"""A wheel that runs anywhere: build it, install it into a fresh virtual environment,
then `secureconnect init` and `secureconnect serve` from an empty directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS_WARNING = re.compile(r"SetuptoolsDeprecationWarning|_Warning:|Package would be ignored")

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd,
                       env=env, timeout=timeout)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


def _clean_env() -> dict[str, str]:
    """The environment of a deployer's shell: none of our variables, no virtualenv."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SECURECONNECT_", "PYTHON", "VIRTUAL_ENV"))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel (dependencies from the package index/cache)."""
    base = tmp_path_factory.mktemp("wheel")
    # setuptools reuses build/ (git-ignored): a module deleted since the last build
    # would still enter the wheel
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    built = _run(sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", base / "dist",
                 ROOT)
    assert not SETUPTOOLS_WARNING.search(built.stdout + built.stderr), \
        "building the wheel warns:\n" + "\n".join(
            line for line in (built.stdout + built.stderr).splitlines() if "arning" in line)
    wheel = next((base / "dist").glob("secureconnect-*.whl"))
    _run(sys.executable, "-m", "venv", base / "venv")
    _run(base / "venv" / "bin" / "pip", "install", "-q", wheel, env=_clean_env())
    return base / "venv" / "bin"


def test_init_writes_commented_settings_and_private_secrets(installed, tmp_path):
    _run(installed / "secureconnect", "init", cwd=tmp_path, env=_clean_env())
    local = (tmp_path / "config" / "settings.local.toml").read_text()
    assert "[default.app]" in local and "# public_url" in local
    secret_file = tmp_path / "config" / ".secrets.toml"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    text = secret_file.read_text()
    assert re.search(r'jwt_secret = "[\w-]{60,}"', text)
    assert "turn_secret = " in text and "vapid_private_key = " in text
    # the written files are valid settings as they stand
    r = _run(installed / "secureconnect", "check-config", "--json", cwd=tmp_path,
             env=_clean_env())
    assert '"jwt_secret": "***"' in r.stdout


def test_serve_from_an_empty_directory_answers_ready(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [str(installed / "secureconnect"), "serve", "--port", str(port)],
        cwd=empty, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        deadline = time.monotonic() + 60
        while _status(f"http://127.0.0.1:{port}/health/ready") != 200:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.2)
        # the embedded database lives in data_dir, created on first run
        assert (empty / "data" / "secureconnect.db").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert "Traceback" not in err, err[-3000:]
