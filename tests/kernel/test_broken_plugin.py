"""A third-party plugin that fails to import is named with the fix; `plugins` and
`check-config` still show the rest, `serve` refuses to start in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder on PYTHONPATH holding an installed-looking plugin whose import fails,
    and one that requires it."""
    site = tmp_path / "site"
    for dist, entry, module, body in (
        ("sc_broken", "broken", "sc_broken_mod",
         "import a_module_that_is_not_installed\n"),
        ("sc_needy", "needy", "sc_needy_mod", 'REQUIRES = ("broken",)\n'),
    ):
        info = site / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[secureconnect]\n{entry} = {module}\n")
        (site / f"{module}.py").write_text(body)
    return site


def cli(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECURECONNECT_ENV": "testing", "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "secureconnect.cli", *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def test_plugins_lists_the_rest_and_names_the_broken_one(site):
    r = cli(site, "plugins", "--json")
    assert r.returncode == 0, r.stderr
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["chat"]["enabled"] and rows["polls"]["enabled"]
    assert "ModuleNotFoundError" in rows["broken"]["error"] and not rows["broken"]["enabled"]
    assert "requires plugin 'broken'" in rows["needy"]["error"]
    assert "`broken = false` under [default.plugins]" in r.stderr
    assert "Traceback" not in r.stderr
    text = cli(site, "plugins").stdout
    assert "BROKEN" in text and "chat" in text


def test_check_config_shows_settings_but_fails(site):
    r = cli(site, "check-config")
    assert r.returncode == 1
    assert "settings are valid" in r.stdout and "[chat]" in r.stdout
    assert "plugin 'broken' failed to import" in r.stderr and "Traceback" not in r.stderr


def test_serve_refuses_in_one_line(site):
    r = cli(site, "serve", "--port", "1")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "plugin 'broken' failed to import" in lines[0]
    assert "`broken = false` under [default.plugins]" in lines[0]


def test_switching_it_off_is_the_fix(site):
    env_off = {"SECURECONNECT_PLUGINS__BROKEN": "false", "SECURECONNECT_PLUGINS__NEEDY": "false"}
    r = subprocess.run([sys.executable, "-m", "secureconnect.cli", "check-config"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "SECURECONNECT_ENV": "testing",
                            "PYTHONPATH": str(site), **env_off})
    assert r.returncode == 0, r.stderr
