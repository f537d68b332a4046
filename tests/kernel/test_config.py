from __future__ import annotations

import pytest

from secureconnect.app import create_app
from secureconnect.config import load_settings, redact
from secureconnect.errors import ConfigError
from secureconnect.testing import make_settings


def test_shipped_settings_are_valid_in_every_environment():
    for env in ("development", "testing"):
        create_app(load_settings(env=env))


def test_misspelt_key_names_key_and_suggests_fix():
    with pytest.raises(ConfigError) as exc:
        create_app(make_settings({"http": {"request_timout": 5}}))
    assert "`http.request_timout` is unknown" in str(exc.value)
    assert "did you mean `http.request_timeout`" in str(exc.value)


def test_unknown_table():
    with pytest.raises(ConfigError, match=r"`\[htp\]` is unknown; did you mean `\[http\]`"):
        create_app(make_settings({"htp": {"x": 1}}))


def test_wrong_type_and_range_name_the_key():
    with pytest.raises(ConfigError) as exc:
        create_app(make_settings({"http": {"request_timeout": 0}, "server": {"port": "x"}}))
    text = str(exc.value)
    assert "`http.request_timeout`" in text and "SECURECONNECT_HTTP__REQUEST_TIMEOUT" in text
    assert "`server.port`" in text


def test_environment_variables_override(monkeypatch):
    monkeypatch.setenv("SECURECONNECT_HTTP__REQUEST_TIMEOUT", "7")
    assert load_settings(env="testing").http.request_timeout == 7


def test_override_file(tmp_path):
    f = tmp_path / "local.toml"
    f.write_text("[default.http]\nrequest_timeout = 12\n")
    assert load_settings([f], env="testing").http.request_timeout == 12


def test_redaction():
    data = {"auth": {"jwt_secret": "s3cret", "algorithm": "HS256"},
            "database": {"url": "postgresql+asyncpg://sc:pw@db/sc"},
            "metrics": {"token": ""}}
    red = redact(data)
    assert red["auth"]["jwt_secret"] == "***"
    assert red["auth"]["algorithm"] == "HS256"
    assert red["database"]["url"] == "postgresql+asyncpg://sc:***@db/sc"
    assert red["metrics"]["token"] == ""
