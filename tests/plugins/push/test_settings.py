"""The `[push]` settings: validated before serving; misconfigured providers stop start-up
with a message naming the setting; secrets are redacted."""

from __future__ import annotations

import pytest

from secureconnect.app import create_app
from secureconnect.config import as_plain_dict, redact
from secureconnect.errors import ConfigError
from secureconnect.testing import make_settings


@pytest.mark.parametrize(("overrides", "names"), [
    ({"preview": "everything"}, "push.preview"),
    ({"providers": ["log", "pigeon"]}, "push.providers"),
    ({"max_attempts": 0}, "push.max_attempts"),
    ({"deliver": "yes"}, "push.deliver"),
    ({"apns": {"token_lifetime": 60}}, "push.apns.token_lifetime"),
    ({"webpush": {"vapid_subject": "admin@example.com"}}, "vapid_subject"),
])
def test_invalid_settings_are_refused(overrides: dict, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        create_app(make_settings({"push": overrides}))


def test_enabled_provider_without_credentials_stops_start_up() -> None:
    for provider, needle in (("fcm", "push.fcm.credentials_json"),
                             ("webpush", "push.webpush.vapid_private_key"),
                             ("apns", "push.apns.key_id")):
        with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
            create_app(make_settings({"push": {"providers": [provider]}}))


def test_secrets_are_redacted() -> None:
    settings = make_settings({"push": {"fcm": {"credentials_json": '{"private_key": "x"}'},
                                       "webpush": {"vapid_private_key": "abc"},
                                       "apns": {"private_key": "pem"}}})
    shown = redact(as_plain_dict(settings))["push"]
    assert shown["fcm"]["credentials_json"] == "***"
    assert shown["webpush"]["vapid_private_key"] == "***"
    assert shown["apns"]["private_key"] == "***"
