"""Fixtures for the push tests: a fake provider over real HTTP and an app pointed at it
(file SQLite: the outbox workers write concurrently with the requests)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.plugins.polls.helpers import merge

from .fakes import FakeProvider

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/push-test.db"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    provider = FakeProvider()
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="session")
def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def push_settings(fake: FakeProvider, rsa_pem: str, **push: Any) -> dict[str, Any]:
    account = {"type": "service_account", "project_id": "demo", "client_email":
               "push@demo.iam.example", "private_key": rsa_pem, "private_key_id": "k1",
               "token_uri": f"{fake.url}/token"}
    base = {
        "enabled": True,
        "providers": ["webhook", "fcm"],
        "webhook_allowed_hosts": ["127.0.0.1"],
        "poll_interval": 0.05,
        "backoff_base": 0.05,
        "backoff_max": 0.2,
        "send_timeout": 2.0,
        "breaker_threshold": 50,
        "breaker_reset": 0.5,
        "fcm": {"endpoint": fake.url, "credentials_json": json.dumps(account)},
    }
    return {"database": {"url": SQLITE_FILE}, "push": merge(base, push)}


@pytest.fixture
def push_client(sc_client: Callable[..., Awaitable[Any]], fake: FakeProvider, rsa_pem: str
                ) -> Callable[..., Awaitable[Any]]:
    """``await push_client(**push_overrides)`` → a test client whose push providers
    point at ``fake``."""

    async def factory(overrides: Mapping[str, Any] | None = None, **push: Any) -> Any:
        return await sc_client(merge(push_settings(fake, rsa_pem, **push), overrides))

    return factory
