"""KeyRing.issue at unit level (issue 22, mutation run): the claims it returns are the
ones the token carries — what verifying the token yields — and the header names the key
and the type."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from secureconnect.app import KERNEL, create_app
from secureconnect.auth.tokens import MIN_SECRET_BYTES, KeyRing, _parse_previous, _weak
from secureconnect.config import load_settings
from secureconnect.errors import ConfigError, Unauthorized

SECRET = b"keyring-issue-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


def test_issued_claims_are_what_the_token_carries() -> None:
    ring = KeyRing("HS256", "k2", SECRET, {"k2": SECRET})
    user_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    before = int(time.time())
    token, claims = ring.issue(issuer="sc", audience="sc-api", user_id=user_id,
                               session_id=session_id, role="admin", ttl=600)
    after = int(time.time())
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": "k2", "typ": "JWT"}
    assert (claims.user_id, claims.session_id, claims.role) == (
        uuid.UUID(user_id), uuid.UUID(session_id), "admin")
    assert before <= claims.issued_at <= after and claims.expires_at == claims.issued_at + 600
    assert len(claims.jti) == 32 and int(claims.jti, 16) >= 0
    assert ring.verify(token, issuer="sc", audience="sc-api", leeway=0) == claims


def test_production_keeps_strong_previous_secrets_for_rotation(tmp_path: Path) -> None:
    """Only a weak previous secret stops production; strong ones verify old tokens."""
    current = "a-strong-production-secret-0123456789-abcdefghijklmnop"
    previous = "the-previous-strong-secret-0123456789-abcdefghijklmnop"
    settings = load_settings(env="production", overrides={
        "app": {"data_dir": str(tmp_path)},
        "auth": {"jwt_secret": current, "jwt_kid": "k2",
                 "jwt_previous_secrets": [f"k1={previous}"]},
    })
    keys = create_app(settings)[KERNEL].auth.keys
    assert (keys.kid, keys.signing_key) == ("k2", current.encode())
    assert keys.verification_keys == {"k2": current.encode(), "k1": previous.encode()}


def test_previous_secret_entries_are_kid_equals_secret() -> None:
    # the first "=" splits: base64 secrets end in "=" and keep them
    assert _parse_previous(["k1=c2VjcmV0==", " k0 =x"]) == {"k1": "c2VjcmV0==", "k0": "x"}
    message = ('setting `auth.jwt_previous_secrets` entries look like "kid=secret" (HS*) or '
               '"kid=/path/public.pem"; got one without \'=\'')
    for entry in ("no-equals-sign", "k1=", "=secret", "  =secret"):
        with pytest.raises(ConfigError) as caught:
            _parse_previous([entry])
        assert str(caught.value) == message


def test_a_secret_exactly_as_long_as_the_hash_is_strong_enough() -> None:
    for algorithm, size in MIN_SECRET_BYTES.items():
        assert not _weak("s" * size, size), algorithm
        assert _weak("s" * (size - 1), size), algorithm
    assert _weak("  ChangeMe  ", 0)  # the shipped and well-known ones, whatever the case


def _rsa_pair(tmp_path: Path, name: str) -> tuple[rsa.RSAPrivateKey, Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / f"{name}.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = tmp_path / f"{name}.pub.pem"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, private, public


def test_rs256_rotation_accepts_tokens_of_the_previous_key(tmp_path: Path) -> None:
    """After rotating RS256 keys, a token the previous private key signed (its kid)
    still verifies; one signed by a key the ring does not hold is refused."""
    old_key, _, old_public = _rsa_pair(tmp_path, "old")
    _, new_private, _ = _rsa_pair(tmp_path, "new")
    stranger, _, _ = _rsa_pair(tmp_path, "stranger")
    settings = load_settings(env="testing", overrides={
        "app": {"data_dir": str(tmp_path)},
        "auth": {"jwt_algorithm": "RS256", "jwt_private_key_file": str(new_private),
                 "jwt_kid": "k2", "jwt_previous_secrets": [f"k1={old_public}"]},
    })
    ring = KeyRing.from_settings(settings.auth, environment="testing")
    assert sorted(ring.verification_keys) == ["k1", "k2"]
    now = int(time.time())
    user_id, session_id = str(uuid.uuid4()), str(uuid.uuid4())
    claims = {"iss": "sc", "aud": "sc-api", "sub": user_id, "sid": session_id,
              "jti": uuid.uuid4().hex, "role": "user", "iat": now, "exp": now + 300}

    def signed(key: rsa.RSAPrivateKey, kid: str) -> str:
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})

    verified = ring.verify(signed(old_key, "k1"), issuer="sc", audience="sc-api", leeway=0)
    assert (str(verified.user_id), str(verified.session_id), verified.expires_at) == (
        user_id, session_id, now + 300)
    # the new key signs (kid k2) and its tokens verify too
    token, _ = ring.issue(issuer="sc", audience="sc-api", user_id=user_id,
                          session_id=session_id, role="user", ttl=60)
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    assert ring.verify(token, issuer="sc", audience="sc-api", leeway=0).user_id == verified.user_id
    refusals = {
        "an unknown key under the previous kid": (
            signed(stranger, "k1"), "the access token is invalid"),
        "the previous key under the current kid": (
            signed(old_key, "k2"), "the access token is invalid"),
        "an unknown kid": (signed(stranger, "k0"), "the access token's key id is unknown"),
    }
    for case, (forged, detail) in refusals.items():
        with pytest.raises(Unauthorized) as caught:
            ring.verify(forged, issuer="sc", audience="sc-api", leeway=0)
        assert (caught.value.code, caught.value.detail) == ("invalid_token", detail), case
