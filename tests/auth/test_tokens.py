"""Access tokens a client (or an attacker) might present: each refused with 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from secureconnect.app import KERNEL
from secureconnect.testing.accounts import register_and_login

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ISS, AUD = "secureconnect", "secureconnect-api"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs_token(header: dict, claims: dict, key: bytes) -> str:
    """Build and sign a JWT by hand (pyjwt refuses to build the malicious ones)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


async def _me(client, token: str) -> tuple[int, str]:
    r = await client.get("/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    body = await r.json()
    return r.status, body.get("code", "")


@pytest.fixture
async def hs_user(sc_client):
    client = await sc_client({"auth": {"jwt_secret": SECRET}})
    user = await register_and_login(client)
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    return client, user, claims


def _claims(base: dict, **changes) -> dict:
    out = dict(base)
    now = int(time.time())
    out.update(iat=now, exp=now + 300, jti=uuid.uuid4().hex)
    out.update(changes)
    return out


async def test_a_well_formed_token_is_accepted(hs_user):
    client, _user, claims = hs_user
    assert set(claims) >= {"iss", "aud", "sub", "exp", "iat", "jti", "sid"}
    assert claims["exp"] - claims["iat"] == 900
    token = jwt.encode(_claims(claims), SECRET, algorithm="HS256", headers={"kid": "k1"})
    assert await _me(client, token) == (200, "")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "token_expired"),
        ("wrong_aud", "invalid_token"),
        ("wrong_iss", "invalid_token"),
        ("tampered", "invalid_token"),
        ("unknown_kid", "invalid_token"),
        ("no_kid", "invalid_token"),
        ("wrong_secret", "invalid_token"),
        ("missing_sid", "invalid_token"),
        ("missing_exp", "invalid_token"),
        ("alg_none", "invalid_token"),
        ("hs512", "invalid_token"),
        ("garbage", "invalid_token"),
    ],
)
async def test_bad_tokens_are_401(hs_user, case, expected):
    client, _user, claims = hs_user
    kid = {"kid": "k1"}
    if case == "expired":
        token = jwt.encode(
            _claims(claims, iat=int(time.time()) - 3600, exp=int(time.time()) - 60),
            SECRET,
            "HS256",
            headers=kid,
        )
    elif case == "wrong_aud":
        token = jwt.encode(_claims(claims, aud="another-service"), SECRET, "HS256", headers=kid)
    elif case == "wrong_iss":
        token = jwt.encode(
            _claims(claims, iss="https://evil.example"), SECRET, "HS256", headers=kid
        )
    elif case == "tampered":
        good = jwt.encode(_claims(claims), SECRET, "HS256", headers=kid)
        head, _payload, sig = good.split(".")
        payload = _b64(json.dumps(_claims(claims, role="admin")).encode())
        token = f"{head}.{payload}.{sig}"
    elif case == "unknown_kid":
        token = jwt.encode(_claims(claims), SECRET, "HS256", headers={"kid": "k9"})
    elif case == "no_kid":
        token = jwt.encode(_claims(claims), SECRET, "HS256")
    elif case == "wrong_secret":
        token = jwt.encode(_claims(claims), "x" * 48, "HS256", headers=kid)
    elif case == "missing_sid":
        token = jwt.encode(
            {k: v for k, v in _claims(claims).items() if k != "sid"}, SECRET, "HS256", headers=kid
        )
    elif case == "missing_exp":
        token = jwt.encode(
            {k: v for k, v in _claims(claims).items() if k != "exp"}, SECRET, "HS256", headers=kid
        )
    elif case == "alg_none":
        token = (
            f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'}).encode())}."
            f"{_b64(json.dumps(_claims(claims)).encode())}."
        )
    elif case == "hs512":
        token = jwt.encode(_claims(claims), SECRET * 2, "HS512", headers=kid)
    else:
        token = "not.a.jwt"
    assert await _me(client, token) == (401, expected)


async def test_revoked_jti_is_401(hs_user):
    client, user, _ = hs_user
    kernel = client.server.app[KERNEL]
    principal = await kernel.auth.authenticate(user.access_token)
    await kernel.auth.revoke_access_token(principal)
    assert await _me(client, user.access_token) == (401, "token_revoked")


async def test_previous_key_still_verifies_during_rotation(sc_client):
    old_secret = "old-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
    client = await sc_client(
        {
            "auth": {
                "jwt_secret": SECRET,
                "jwt_kid": "k2",
                "jwt_previous_secrets": [f"k1={old_secret}"],
            }
        }
    )
    user = await register_and_login(client)
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    assert jwt.get_unverified_header(user.access_token)["kid"] == "k2"
    old = jwt.encode(_claims(claims), old_secret, "HS256", headers={"kid": "k1"})
    assert await _me(client, old) == (200, "")
    # the old secret under the new kid is not the new key
    forged = jwt.encode(_claims(claims), old_secret, "HS256", headers={"kid": "k2"})
    assert await _me(client, forged) == (401, "invalid_token")


@pytest.fixture
def rsa_key_file(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "jwt.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


async def test_rs256_tokens_and_hs_rs_key_confusion(sc_client, rsa_key_file):
    client = await sc_client(
        {"auth": {"jwt_algorithm": "RS256", "jwt_private_key_file": str(rsa_key_file)}}
    )
    user = await register_and_login(client)
    assert jwt.get_unverified_header(user.access_token)["alg"] == "RS256"
    assert await _me(client, user.access_token) == (200, "")

    # The classic confusion attack: sign HS256 with the server's *public* key as secret.
    private = serialization.load_pem_private_key(rsa_key_file.read_bytes(), password=None)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = _claims(jwt.decode(user.access_token, options={"verify_signature": False}))
    forged = _hs_token({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims, public_pem)
    assert await _me(client, forged) == (401, "invalid_token")
