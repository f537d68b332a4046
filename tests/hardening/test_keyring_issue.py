"""KeyRing.issue at unit level (issue 22, mutation run): the claims it returns are the
ones the token carries — what verifying the token yields — and the header names the key
and the type."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import pytest

from secureconnect.app import KERNEL, create_app
from secureconnect.auth.tokens import MIN_SECRET_BYTES, KeyRing, _parse_previous, _weak
from secureconnect.config import load_settings
from secureconnect.errors import ConfigError

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
