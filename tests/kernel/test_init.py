"""`secureconnect init`: a deployer's commented settings and generated secrets (0600)
for the kernel and every installed plugin, valid as written, enough for production."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from secureconnect.initconfig import local_settings_text, secrets_text


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SECURECONNECT_")}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "secureconnect.cli", *args], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


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


def test_init_writes_secrets_for_every_installed_plugin(tmp_path):
    r = cli("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    secret_file = tmp_path / "config" / ".secrets.toml"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secrets = tomllib.loads(secret_file.read_text())["default"]
    assert len(secrets["auth"]["jwt_secret"]) >= 60
    assert len(secrets["video"]["turn_secret"]) >= 40
    assert len(secrets["drive"]["url_secret"].encode()) >= 32
    assert len(secrets["push"]["webpush"]["vapid_private_key"]) == 43
    local = tomllib.loads((tmp_path / "config" / "settings.local.toml").read_text())
    # every table is there, every value commented out: the shipped defaults stand
    assert {"app", "server", "plugins", "video", "drive", "ai", "push"} <= set(local["default"])

    def values(table: dict[str, object]) -> list[object]:
        return [v for v in table.values() if not isinstance(v, dict)] + [
            x for v in table.values() if isinstance(v, dict) for x in values(v)]

    assert values(local) == []
    text = (tmp_path / "config" / "settings.local.toml").read_text()
    assert '# s3_bucket = "' in text and "# turn_urls = [" in text

    # valid as written, and the secrets stay hidden
    r = cli("check-config", "--json", "--env", "production", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["auth"]["jwt_secret"] == data["video"]["turn_secret"] == "***"
    assert data["drive"]["url_secret"] == "***"
    assert secrets["drive"]["url_secret"] not in r.stdout

    # a second init keeps the files: one line, exit 1
    again = cli("init", cwd=tmp_path)
    assert again.returncode == 1 and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr


def test_production_serves_with_the_files_init_wrote(tmp_path):
    """Production refuses an ephemeral JWT secret and unsigned drive URLs; the secrets
    init generated are enough for it to start and answer ready."""
    assert cli("init", cwd=tmp_path).returncode == 0
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "secureconnect.cli", "serve", "--env", "production",
         "--port", str(port)],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _status(f"http://127.0.0.1:{port}/health/ready") != 200:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert "Traceback" not in err, err[-3000:]
    assert not re.search(r"ephemeral", err), err[-3000:]


def test_tables_of_plugins_not_installed_are_commented_out():
    for text in (secrets_text({"auth"}), local_settings_text({"app", "auth"})):
        parsed = tomllib.loads(text)["default"]
        assert not {"video", "drive", "ai", "push"} & set(parsed)
        assert "# [default.drive]" in text and "the drive plugin is not installed" in text


def test_the_vapid_key_init_writes_is_one_the_push_plugin_loads():
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from secureconnect_plugins.push.providers.webpush import b64url, load_vapid_key

    text = secrets_text({"auth", "push"})
    private = tomllib.loads(text)["default"]["push"]["webpush"]["vapid_private_key"]
    public = re.search(r"PushManager.subscribe: (\S+)", text)
    assert public is not None
    key = load_vapid_key(private)
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert b64url(point) == public[1]
