"""Settings mistakes are refused with a message that says what and where, never ignored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from secureconnect.app import create_app
from secureconnect.config import load_settings, redact
from secureconnect.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, files: list[Path] = (), env: dict[str, str] | None = None,
        cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "SECURECONNECT_ENV": "testing", **(env or {})}
    if files:
        full["SECURECONNECT_SETTINGS_FILES"] = ",".join(str(f) for f in files)
    return subprocess.run([sys.executable, "-m", "secureconnect.cli", *args],
                          capture_output=True, text=True, timeout=60, env=full, cwd=cwd)


@pytest.mark.parametrize(("text", "hint"), [
    ("[plugins]\npolls = false\n", "did you mean `[default.plugins]`?"),
    ("[chat]\nmax_group_members = 10\n", "did you mean `[default.chat]`?"),
    ("[develop.chat]\nmax_group_members = 10\n", "did you mean `[development.chat]`?"),
    ("[prodction.http]\nrequest_timeout = 5\n", "did you mean `[production.http]`?"),
    ("[video]\nturn_urls = []\n", "did you mean `[default.video]`?"),
    ('[drive]\nbackend = "s3"\n', "did you mean `[default.drive]`?"),
    ("[production.drive]\nmax_file_size = 1\n[prod.video]\nring_timeout = 5\n",
     "did you mean `[production.video]`?"),
    ("[dev.drive]\nmax_file_size = 1\n", "did you mean `[development.drive]`?"),
    ('[ai]\nprovider = "openai"\n', "did you mean `[default.ai]`?"),
])
def test_top_level_table_that_is_no_environment_stops_start_up(tmp_path, text, hint):
    f = tmp_path / "local.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings([f], env="testing")
    assert hint in str(exc.value) and str(f) in str(exc.value)
    r = cli("check-config", files=[f])
    assert r.returncode == 2, r.stdout
    assert hint in r.stderr and "settings are valid" not in r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_toml_syntax_error_is_one_line_with_file_line_and_column(tmp_path):
    f = tmp_path / "broken.toml"
    f.write_text("[default.http]\nrequest_timeout = 5\nbehind_tls = tru\n")
    r = cli("check-config", files=[f])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"{f}:3:" in lines[0] and "line 3, column" in lines[0]
    assert "Traceback" not in r.stderr


def test_type_error_shows_the_value_and_the_file_it_came_from(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[default.server]\nport = "80x"\n')
    with pytest.raises(ConfigError) as exc:
        create_app(load_settings([f], env="testing"))
    text = str(exc.value)
    assert "`server.port` must be of type int but is '80x'" in text
    assert f"(from {f})" in text
    assert "<class" not in text


def test_a_secret_of_the_wrong_type_is_not_printed(tmp_path):
    f = tmp_path / ".secrets.toml"
    f.write_text("[default.auth]\nsmtp_password = 123456789\n")
    with pytest.raises(ConfigError) as exc:
        create_app(load_settings([f], env="testing"))
    assert "`auth.smtp_password` must be of type str but is '***'" in str(exc.value)
    assert "123456789" not in str(exc.value)


def test_type_error_from_an_environment_variable_names_it(monkeypatch):
    monkeypatch.setenv("SECURECONNECT_CHAT__MAX_GROUP_MEMBERS", "1.5")
    with pytest.raises(ConfigError) as exc:
        create_app(load_settings(env="testing"))
    assert "but is 1.5 (from environment variable SECURECONNECT_CHAT__MAX_GROUP_MEMBERS)" \
        in str(exc.value)


def test_redaction_hides_only_secrets():
    data = {"auth": {"jwt_secret": "s3cret", "access_token_ttl": 900,
                     "password_min_length": 10, "smtp_password": "pw",
                     "jwt_previous_secrets": ["k0=old"], "jwt_private_key_file": "/k.pem"},
            "push": {"vapid_private_key": "abc", "sentry_dsn": "https://x@y/1"},
            "metrics": {"token": "t"},
            "fcm": {"credentials_json": "{}", "credentials_file": "/etc/fcm.json"},
            "redis": {"url": "redis://:hunter2@cache:6379/0"}}
    red = redact(data)
    assert red["auth"] == {"jwt_secret": "***", "access_token_ttl": 900,
                           "password_min_length": 10, "smtp_password": "***",
                           "jwt_previous_secrets": ["***"], "jwt_private_key_file": "/k.pem"}
    assert red["push"] == {"vapid_private_key": "***", "sentry_dsn": "***"}
    assert red["metrics"]["token"] == "***"
    assert red["fcm"] == {"credentials_json": "***", "credentials_file": "/etc/fcm.json"}
    assert red["redis"]["url"] == "redis://:***@cache:6379/0"


@pytest.mark.parametrize(("text", "message"), [
    ('[default.drive]\nmax_file_size = "5GiB"\n',
     "`drive.max_file_size` must be of type int but is '5GiB'"),
    ('[default.video]\nring_timeout = "soon"\n',
     "`video.ring_timeout` must be of type int or float but is 'soon'"),
    ("[default.drive]\nmax_file_sise = 10\n", "drive.max_file_size"),
    ("[default.video]\nturn_secrett = 'x'\n", "video.turn_secret"),
])
def test_plugin_settings_mistakes_name_the_key_value_and_file(tmp_path, text, message):
    f = tmp_path / "plugins.toml"
    f.write_text(text)
    r = cli("check-config", files=[f])
    assert r.returncode == 2, r.stdout
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "settings are valid" not in r.stdout
    if "type" in message:
        assert f"(from {f})" in r.stderr


def test_check_config_redacts_the_plugins_secrets(tmp_path):
    f = tmp_path / ".secrets.toml"
    f.write_text('[default.video]\nturn_secret = "turn-shared-secret"\n'
                 '[default.drive]\nurl_secret = "u" \n'
                 's3_access_key_id = "AKIAEXAMPLE"\ns3_secret_access_key = "wJalr"\n'
                 '[default.ai]\nopenai_api_key = "sk-example"\n')
    r = cli("check-config", "--json", files=[f])
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["video"]["turn_secret"] == "***"
    drive = data["drive"]
    assert drive["url_secret"] == drive["s3_access_key_id"] == "***"
    assert drive["s3_secret_access_key"] == "***"
    assert drive["max_file_size"] == 5368709120 and drive["url_ttl"] == 900
    assert data["ai"]["openai_api_key"] == "***" and data["ai"]["provider"] == "local"
    for leaked in ("turn-shared-secret", "AKIAEXAMPLE", "wJalr", "sk-example"):
        assert leaked not in r.stdout + r.stderr


def test_check_config_shows_non_secrets():
    r = cli("check-config", "--json", env={"SECURECONNECT_AUTH__JWT_SECRET": "x" * 40})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["auth"]["access_token_ttl"] == 900
    assert data["auth"]["jwt_secret"] == "***"


def test_development_relaxes_register_and_login_limits_production_keeps_them():
    dev = load_settings(env="development").rate_limits.classes
    prod = load_settings(env="production").rate_limits.classes
    assert prod.register.per_ip == "10/hour"
    assert prod.login.per_ip == "10/minute;100/hour"
    assert int(dev.register.per_ip.split("/")[0]) >= 100
    assert int(dev.login.per_ip.split("/")[0]) >= 60
