"""KeyRing.verify at unit level: every refusal with its code and detail, the remembered
tokens' expiry (with the leeway) and bound, and the claims a verified token yields."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import pytest

from secureconnect.auth.tokens import KeyRing
from secureconnect.errors import Unauthorized

SECRET = b"keyring-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
ISS, AUD = "secureconnect", "secureconnect-api"


def _ring() -> KeyRing:
    return KeyRing("HS256", "k1", SECRET, {"k1": SECRET, "k0": b"previous-" + SECRET})


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISS, "aud": AUD, "sub": str(uuid.uuid4()), "sid": str(uuid.uuid4()),
        "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300, "role": "admin",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _token(claims: dict[str, Any], key: bytes = SECRET, kid: str | None = "k1",
           alg: str = "HS256", **headers: str) -> str:
    return jwt.encode(claims, key, algorithm=alg,
                      headers={"kid": kid, **headers} if kid else None)


def _refused(ring: KeyRing, token: str, *, leeway: float = 0) -> tuple[str, str]:
    with pytest.raises(Unauthorized) as caught:
        ring.verify(token, issuer=ISS, audience=AUD, leeway=leeway)
    return caught.value.code, caught.value.detail


def test_a_valid_token_yields_its_claims() -> None:
    claims = _claims()
    got = _ring().verify(_token(claims), issuer=ISS, audience=AUD, leeway=0)
    assert got.user_id == uuid.UUID(claims["sub"])
    assert got.session_id == uuid.UUID(claims["sid"])
    assert (got.jti, got.role) == (claims["jti"], "admin")
    assert (got.issued_at, got.expires_at) == (claims["iat"], claims["exp"])
    # a token without a role is a plain user's; a previous key still verifies
    got = _ring().verify(_token(_claims(role=None), b"previous-" + SECRET, "k0"),
                         issuer=ISS, audience=AUD, leeway=0)
    assert got.role == "user"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("é" + _token(_claims()), ("invalid_token", "the access token is malformed")),
        ("\udcff" + _token(_claims()), ("invalid_token", "the access token is malformed")),
        ("a" * 8193, ("invalid_token", "the access token is malformed")),
        ("not.a.jwt", ("invalid_token", "the access token is malformed")),
        (_token(_claims(), alg="HS384"),
         ("invalid_token", "the access token's algorithm is not accepted")),
        (_token(_claims(), kid="k9"), ("invalid_token", "the access token's key id is unknown")),
        (_token(_claims(), kid=None), ("invalid_token", "the access token's key id is unknown")),
        (_token(_claims(iat=int(time.time()) - 600, exp=int(time.time()) - 60)),
         ("token_expired", "the access token has expired; refresh it")),
        (_token(_claims(aud="another-service")),
         ("invalid_token", "the access token is not meant for this service")),
        (_token(_claims(iss="elsewhere")),
         ("invalid_token", "the access token was not issued by this service")),
        (_token(_claims(), key=b"another-secret-0123456789-abcdefghijklmnop"),
         ("invalid_token", "the access token is invalid")),
        (_token(_claims(jti=None)), ("invalid_token", "the access token is invalid")),
        (_token(_claims(sid=None)), ("invalid_token", "the access token is invalid")),
        (_token(_claims(iat=int(time.time()) + 600)),
         ("invalid_token", "the access token is invalid")),
        (_token(_claims(sub="not-a-uuid")),
         ("invalid_token", "the access token's claims are malformed")),
        (_token(_claims(sid="not-a-uuid")),
         ("invalid_token", "the access token's claims are malformed")),
    ],
    ids=["non_ascii", "surrogate", "oversize", "garbage", "other_alg", "unknown_kid", "no_kid",
         "expired", "wrong_aud", "wrong_iss", "wrong_key", "no_jti", "no_sid", "future_iat",
         "bad_sub", "bad_sid"],
)
def test_refusals_have_a_code_and_a_detail(token: str, expected: tuple[str, str]) -> None:
    assert _refused(_ring(), token) == expected


def _token_of_length(length: int) -> str:
    """A valid token exactly ``length`` characters long (padded with a claim)."""
    for extra in range(4):  # the header's length too: base64 skips lengths 1 (mod 4)
        for pad in range(length * 3 // 4 - 600, length * 3 // 4):
            token = _token(_claims(pad="p" * pad), x="x" * extra)
            if len(token) == length:
                return token
    raise AssertionError(f"no token of {length} characters")


def test_the_length_cap_is_8192_characters() -> None:
    longest = _token_of_length(8192)
    assert _ring().verify(longest, issuer=ISS, audience=AUD, leeway=0).role == "admin"
    assert _refused(_ring(), _token_of_length(8193)) == (
        "invalid_token", "the access token is malformed")


def test_the_leeway_applies_to_fresh_and_remembered_tokens() -> None:
    ring = _ring()
    now = int(time.time())
    late = _token(_claims(iat=now - 600, exp=now - 5))
    got = ring.verify(late, issuer=ISS, audience=AUD, leeway=30)
    assert got.expires_at == now - 5
    # remembered: accepted again inside the leeway, refused (and forgotten) past it
    assert ring.verify(late, issuer=ISS, audience=AUD, leeway=30) == got
    assert _refused(ring, late, leeway=1) == (
        "token_expired", "the access token has expired; refresh it")
    assert (late, ISS, AUD) not in ring._verified


def test_remembered_tokens_are_per_issuer_and_audience_and_bounded() -> None:
    ring = _ring()
    ring.verified_max = 2
    tokens = [_token(_claims()) for _ in range(3)]
    for t in tokens:
        ring.verify(t, issuer=ISS, audience=AUD, leeway=0)
    assert list(ring._verified) == [(t, ISS, AUD) for t in tokens[1:]]
    # a remembered token is not accepted for another audience or issuer
    assert _refused_for(ring, tokens[2], audience="another-service") == (
        "invalid_token", "the access token is not meant for this service")
    assert _refused_for(ring, tokens[2], issuer="elsewhere") == (
        "invalid_token", "the access token was not issued by this service")


def _refused_for(ring: KeyRing, token: str, *, issuer: str = ISS,
                 audience: str = AUD) -> tuple[str, str]:
    with pytest.raises(Unauthorized) as caught:
        ring.verify(token, issuer=issuer, audience=audience, leeway=0)
    return caught.value.code, caught.value.detail
