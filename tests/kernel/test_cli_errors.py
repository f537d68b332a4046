"""The command line's manners: one line per ordinary error (exit 2 usage, 1 failure),
no traceback unless --debug, --version, help for every option, global options after
the subcommand, the JWT-secret warning only for `serve`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secureconnect import __version__
from secureconnect.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SECURECONNECT_ENV": "testing", **(env or {})}
    feed: dict[str, object] = {"input": stdin} if stdin is not None else {
        "stdin": subprocess.DEVNULL}
    return subprocess.run([sys.executable, "-m", "secureconnect.cli", *args],
                          capture_output=True, text=True, timeout=60, env=full, cwd=cwd,
                          **feed)  # type: ignore[call-overload]


def one_line_error(r: subprocess.CompletedProcess[str], code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture
def db_env(tmp_path):
    return {"SECURECONNECT_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db"}


def test_create_user_mistakes_are_one_line_exit_1(db_env):
    ok = cli("create-user", "dup@example.com", "--password-stdin", env=db_env,
             stdin="correct horse battery\n")
    assert ok.returncode == 0, ok.stderr
    assert "ephemeral" not in ok.stderr  # the JWT warning is for `serve` only
    line = one_line_error(cli("create-user", "DUP@example.com", "--password-stdin",
                              env=db_env, stdin="correct horse battery\n"), 1)
    assert "already exists" in line
    line = one_line_error(cli("create-user", "x@example.com", "--password-stdin",
                              env=db_env, stdin="short\n"), 1)
    assert "too short" in line
    line = one_line_error(cli("create-user", "not-an-email", "--password-stdin",
                              env=db_env, stdin="correct horse battery\n"), 1)
    assert "not a valid address" in line
    # no terminal and no --password-stdin: say how instead of hanging or crashing
    line = one_line_error(cli("create-user", "y@example.com", env=db_env), 1)
    assert "--password-stdin" in line


def test_usage_errors_exit_2_without_traceback():
    r = cli("serve", "--port", "eighty")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "invalid int" in r.stderr
    r = cli("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    line = one_line_error(cli("jobs", "run", "nope"), 2)
    assert "no job named 'nope'" in line


def test_missing_extra_names_the_pip_command():
    # the Redis back end without the redis package importable: hide it from this process
    env = {"SECURECONNECT_REDIS__URL": "redis://127.0.0.1:1/0",
           "PYTHONPATH": str(ROOT / "tests" / "fixtures" / "no_redis")}
    line = one_line_error(cli("migrate", env=env), 1)
    assert "pip install 'secureconnect[redis]'" in line


def test_drive_on_s3_without_the_extra_is_refused_by_check_config_and_serve():
    """`check-config` does not call settings valid that `serve` cannot start with."""
    env = {"SECURECONNECT_DRIVE__BACKEND": "s3", "SECURECONNECT_DRIVE__S3_BUCKET": "files",
           "PYTHONPATH": str(ROOT / "tests" / "fixtures" / "no_s3")}
    line = one_line_error(cli("check-config", env=env), 1)
    assert line.endswith("pip install 'secureconnect[s3]'") and "drive.backend" in line
    served = cli("serve", "--port", "0", env=env)  # logs its start-up, then one line
    assert served.returncode == 1 and "Traceback" not in served.stderr
    assert served.stderr.strip().splitlines()[-1].endswith("pip install 'secureconnect[s3]'")
    # with the drive switched off the module is not needed
    r = cli("check-config", env={**env, "SECURECONNECT_PLUGINS__DRIVE": "false"})
    assert r.returncode == 0, r.stderr


def test_web_push_without_its_extra_names_the_pip_command():
    env = {"PYTHONPATH": str(ROOT / "tests" / "fixtures" / "no_push"),
           "SECURECONNECT_PUSH__PROVIDERS": '["webpush"]',
           "SECURECONNECT_PUSH__WEBPUSH__VAPID_SUBJECT": "mailto:ops@example.org",
           "SECURECONNECT_PUSH__WEBPUSH__VAPID_PRIVATE_KEY": "x" * 43}
    line = one_line_error(cli("check-config", env=env), 1)
    assert line.endswith("pip install 'secureconnect[push]'"), line


def test_local_ai_without_its_extra_is_a_warning_of_check_config():
    """The AI plugin starts without its model package (its routes answer 503 with the
    same hint), so check-config warns instead of refusing."""
    env = {"PYTHONPATH": str(ROOT / "tests" / "fixtures" / "no_ai")}
    r = cli("check-config", env=env)
    assert r.returncode == 0, r.stderr
    assert "pip install 'secureconnect[ai]'" in r.stderr and "`ai.provider`" in r.stderr
    r = cli("check-config", env={**env, "SECURECONNECT_AI__PROVIDER": "openai"})
    assert r.returncode == 0 and "secureconnect[ai]" not in r.stderr


def test_plugin_admin_commands_keep_the_same_manners(db_env):
    """The drive's quota command (run_admin_command): no serve-only warning, one line
    per failure, the traceback with --debug."""
    user = "3f1c1f0e-8a2b-4c1d-9e0f-123456789abc"

    def drive(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        full = {**os.environ, "SECURECONNECT_ENV": "development", **env}
        return subprocess.run([sys.executable, "-m", "secureconnect_plugins.drive.cli",
                               *args, "quota", user], capture_output=True, text=True,
                              timeout=60, env=full, cwd=ROOT, stdin=subprocess.DEVNULL)

    ok = drive(env=db_env)
    assert ok.returncode == 0, ok.stderr
    assert '"limit": 10737418240' in ok.stdout and "ephemeral" not in ok.stderr
    down = {"SECURECONNECT_DATABASE__URL": "postgresql+asyncpg://sc@127.0.0.1:1/sc"}
    line = one_line_error(drive(env=down), 1)
    assert line.startswith("drive: ") and "127.0.0.1" in line
    assert "Traceback" in drive("--debug", env=down).stderr


def test_debug_shows_the_traceback(db_env):
    r = cli("create-user", "not-an-email", "--password-stdin", "--debug", env=db_env,
            stdin="correct horse battery\n")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_version_and_global_options_after_the_subcommand(tmp_path):
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"secureconnect {__version__}"
    f = tmp_path / "port.toml"
    f.write_text("[default.server]\nport = 9999\n")
    r = cli("check-config", "--json", "--config", str(f), "--env", "testing")
    assert r.returncode == 0, r.stderr
    assert '"port": 9999' in r.stdout


def test_every_option_has_help():
    parser = build_parser()
    missing = []

    def walk(p, path):
        for action in p._actions:
            if action.help is None and action.dest != "help":
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(parser, "secureconnect")
    assert not missing, missing
