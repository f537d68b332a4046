"""Start-up rules for the signing secret, and revocation that survives a cache outage."""

from __future__ import annotations

import json
import logging

import pytest

from secureconnect.app import KERNEL, create_app
from secureconnect.auth.service import REVOKED_TOPIC
from secureconnect.config import load_settings
from secureconnect.errors import ConfigError
from secureconnect.testing import wait_for
from secureconnect.testing.accounts import register_and_login

STRONG = "a-strong-production-secret-0123456789-abcdefghijklmnop"


def _production(tmp_path, **auth):
    return load_settings(
        env="production", overrides={"app": {"data_dir": str(tmp_path)}, "auth": auth}
    )


@pytest.mark.parametrize("secret", ["", "changeme", "short-but-not-empty"])
def test_production_refuses_to_start_with_a_weak_secret(tmp_path, secret):
    with pytest.raises(ConfigError, match=r"auth\.jwt_secret"):
        create_app(_production(tmp_path, jwt_secret=secret))


def test_production_starts_with_a_strong_secret(tmp_path):
    app = create_app(_production(tmp_path, jwt_secret=STRONG))
    assert app[KERNEL].auth.keys.signing_key == STRONG.encode()


def test_production_refuses_weak_previous_secrets(tmp_path):
    with pytest.raises(ConfigError, match="jwt_previous_secrets"):
        create_app(_production(tmp_path, jwt_secret=STRONG, jwt_previous_secrets=["k0=weak"]))


def test_testing_generates_an_ephemeral_secret_with_a_warning(sc_app, caplog):
    with caplog.at_level(logging.WARNING, logger="secureconnect.auth.tokens"):
        first = sc_app()[KERNEL].auth.keys.signing_key
        second = sc_app()[KERNEL].auth.keys.signing_key
    assert first != second and len(first) >= 32
    assert "ephemeral" in caplog.text


@pytest.mark.parametrize(
    ("auth", "match"),
    [
        ({"jwt_algorithm": "RS256"}, "jwt_private_key_file"),
        ({"jwt_algorithm": "RS256", "jwt_private_key_file": "/nonexistent.pem"}, "cannot read"),
        ({"jwt_previous_secrets": ["no-equals-sign"]}, "kid=secret"),
        ({"jwt_previous_secrets": ["k1=" + STRONG]}, "reuses the current kid"),
        ({"jwt_algorithm": "none"}, r"auth\.jwt_algorithm"),
    ],
)
def test_key_settings_errors_name_the_fix(sc_app, auth, match):
    with pytest.raises(ConfigError, match=match):
        sc_app({"auth": auth})


async def test_revocations_are_published_on_the_bus(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    heard: list[dict] = []
    await kernel.bus.subscribe(REVOKED_TOPIC, lambda _t, msg: heard.append(json.loads(msg)))
    user = await register_and_login(client)
    principal = await kernel.auth.authenticate(user.access_token)
    assert (await client.post("/v1/auth/logout", headers=user.headers)).status == 204
    await wait_for(lambda: heard, message="an auth:revoked message")
    assert heard[0] == {
        "session_ids": [str(principal.session_id)],
        "user_id": user.user_id,
        "reason": "logout",
    }


class _BrokenCache:
    """The cache during a Redis outage at its worst: every call fails."""

    def __init__(self, real) -> None:
        self.real = real
        self.broken = False
        self.failures: list[str] = []  # the key of every call that failed

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name not in ("get", "set", "delete", "incr", "set_if_absent", "expire"):
            return attr

        async def call(*args, **kwargs):
            if self.broken:
                self.failures.append(str(args[0]) if args else name)
                raise ConnectionError("redis is down")
            return await attr(*args, **kwargs)

        return call


async def test_revoking_instance_never_readmits_during_a_cache_outage(sc_client):
    client = await sc_client()
    kernel = client.server.app[KERNEL]
    cache = kernel.cache = _BrokenCache(kernel.cache)
    user = await register_and_login(client)
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 200  # cached

    cache.broken = True
    assert (await client.post("/v1/auth/logout", headers=user.headers)).status == 204
    r = await client.get("/v1/users/me", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_revoked"

    # the outage ends with the cache still saying "active" (the write was lost)
    cache.broken = False
    r = await client.get("/v1/users/me", headers=user.headers)
    assert r.status == 401 and (await r.json())["code"] == "token_revoked"
    # every failed revocation-cache call, and nothing else, is counted
    revocation_calls = [k for k in cache.failures if k.startswith("auth:")]
    assert revocation_calls, cache.failures
    assert kernel.metrics.value("auth_revocation_cache_errors_total") == len(revocation_calls)


async def test_other_instance_learns_revocation_from_the_database(sc_client):
    """Two apps sharing one database: the one that did not revoke asks the database
    once its cached "active" answer expires (session_cache_ttl)."""
    client = await sc_client({"auth": {"session_cache_ttl": 0.2}})
    kernel = client.server.app[KERNEL]
    user = await register_and_login(client)
    assert (await client.get("/v1/users/me", headers=user.headers)).status == 200
    principal = await kernel.auth.authenticate(user.access_token)
    # revoke behind this instance's back: only the database knows
    from sqlalchemy import update

    from secureconnect.auth import models

    async with kernel.db.connect() as conn:
        await conn.execute(
            update(models.sessions)
            .where(models.sessions.c.id == str(principal.session_id))
            .values(revoked_at=kernel.auth.now(), revoked_reason="admin")
        )

    async def refused() -> bool:
        r = await client.get("/v1/users/me", headers=user.headers)
        return r.status == 401

    await wait_for(refused, timeout=3, message="the revoked session to be refused")
