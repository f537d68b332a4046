"""Access tokens (JWT), opaque refresh/email tokens and their digests.

Access tokens carry ``iss``, ``aud``, ``sub`` (user id), ``exp``, ``iat``, ``jti``,
``sid`` (session id) and ``role``; every one is required on verification. Only the
configured algorithm is accepted — so ``alg: none`` and HS/RS key confusion (an RSA
public key used as an HMAC secret) are refused before any signature check — and the
``kid`` header picks the verification key: the current key signs, previous keys (kept
during a rotation) still verify.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from ..errors import ConfigError, Unauthorized

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
ALGORITHMS = HMAC_ALGORITHMS + ASYMMETRIC_ALGORITHMS
REQUIRED_CLAIMS = ("iss", "aud", "sub", "exp", "iat", "jti", "sid")
#: secrets that must never sign tokens outside development (examples from docs)
KNOWN_WEAK_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "development", "secureconnect", "please-change-me"}
)
#: RFC 7518 §3.2: an HMAC key at least as long as the hash output
MIN_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


def new_opaque_token() -> str:
    """256 random bits, URL-safe: refresh tokens and email tokens."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What the database keeps of an opaque token (SHA-256 hex): a leaked table
    does not give usable tokens, and lookups stay exact."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    jti: str
    role: str
    issued_at: int
    expires_at: int


class KeyRing:
    """Signing key (current ``kid``) and verification keys by ``kid``."""

    def __init__(
        self, algorithm: str, kid: str, signing_key: Any, verification_keys: dict[str, Any]
    ) -> None:
        self.algorithm = algorithm
        self.kid = kid
        self.signing_key = signing_key
        self.verification_keys = verification_keys
        # Tokens whose signature and claims were verified, by (token, issuer, audience):
        # a client presents the same access token on every request until it expires,
        # so the signature check and the claim parsing run once per token and
        # instance. A hit still checks the expiry; revocation is checked by the caller
        # on every request. Bounded (oldest first).
        self._verified: OrderedDict[tuple[str, str, str], AccessClaims] = OrderedDict()
        self.verified_max = 10_000

    @classmethod
    def from_settings(cls, s: Any, *, environment: str) -> KeyRing:
        algorithm = str(s.jwt_algorithm)
        kid = str(s.jwt_kid)
        previous = _parse_previous(list(s.jwt_previous_secrets))
        if kid in previous:
            raise ConfigError(
                f"setting `auth.jwt_previous_secrets` reuses the current kid "
                f"{kid!r}; give the new key a new `auth.jwt_kid`"
            )
        if algorithm in HMAC_ALGORITHMS:
            secret = str(s.jwt_secret)
            min_bytes = MIN_SECRET_BYTES[algorithm]
            if _weak(secret, min_bytes):
                if environment == "production":
                    raise ConfigError(
                        "setting `auth.jwt_secret` is empty, shipped or shorter than "
                        f"{min_bytes} bytes for {algorithm}; production refuses to sign "
                        "tokens with it. Generate one (python -c 'import secrets; "
                        "print(secrets.token_urlsafe(48))') and set it in "
                        "config/.secrets.toml or SECURECONNECT_AUTH__JWT_SECRET"
                    )
                log.warning(
                    "auth.jwt_secret is not set (or weak): using an ephemeral random secret "
                    "for this %s process; tokens will not survive a restart",
                    environment,
                    extra={"serve_only": True},
                )
                secret = secrets.token_urlsafe(48)
            keys: dict[str, Any] = {kid: secret.encode()}
            for old_kid, old in previous.items():
                if _weak(old, min_bytes) and environment == "production":
                    raise ConfigError(
                        f"setting `auth.jwt_previous_secrets`: the secret of kid "
                        f"{old_kid!r} is weak; remove it or use a strong one"
                    )
                keys[old_kid] = old.encode()
            return cls(algorithm, kid, secret.encode(), keys)
        path = str(s.jwt_private_key_file)
        if not path:
            raise ConfigError(
                f"setting `auth.jwt_algorithm` = {algorithm!r} needs "
                "`auth.jwt_private_key_file` (a PEM private key)"
            )
        private = serialization.load_pem_private_key(
            _read(path, "auth.jwt_private_key_file"), password=None
        )
        keys = {kid: private.public_key()}
        for old_kid, old_path in previous.items():
            keys[old_kid] = serialization.load_pem_public_key(
                _read(old_path, "auth.jwt_previous_secrets")
            )
        return cls(algorithm, kid, private, keys)

    # -- access tokens -------------------------------------------------------------
    def issue(
        self, *, issuer: str, audience: str, user_id: str, session_id: str, role: str, ttl: int
    ) -> tuple[str, AccessClaims]:
        now = int(time.time())
        jti = uuid.uuid4().hex
        claims = {
            "iss": issuer,
            "aud": audience,
            "sub": user_id,
            "iat": now,
            "exp": now + ttl,
            "jti": jti,
            "sid": session_id,
            "role": role,
        }
        token = jwt.encode(
            claims,
            self.signing_key,
            algorithm=self.algorithm,
            headers={"kid": self.kid, "typ": "JWT"},
        )
        return token, AccessClaims(
            uuid.UUID(user_id), uuid.UUID(session_id), jti, role, now, now + ttl
        )

    def verify(self, token: str, *, issuer: str, audience: str, leeway: float) -> AccessClaims:
        """Verified claims, or :class:`Unauthorized` with a stable code."""
        if not token.isascii() or len(token) > 8192:
            # no token we issue has other characters; PyJWT would fail to encode them
            raise _invalid("the access token is malformed")
        memo = (token, issuer, audience)
        known = self._verified.get(memo)
        if known is not None:
            if known.expires_at <= time.time() - leeway:
                del self._verified[memo]
                raise _expired()
            return known
        claims = self._verify(token, issuer=issuer, audience=audience, leeway=leeway)
        self._verified[memo] = claims
        if len(self._verified) > self.verified_max:
            self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str, *, issuer: str, audience: str, leeway: float) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("the access token is malformed") from None
        if header.get("alg") != self.algorithm:
            raise _invalid("the access token's algorithm is not accepted")
        kid = header.get("kid")
        key = self.verification_keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid("the access token's key id is unknown")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=audience,
                issuer=issuer,
                leeway=leeway,
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise _expired() from None
        except jwt.InvalidAudienceError:
            raise _invalid("the access token is not meant for this service") from None
        except jwt.InvalidIssuerError:
            raise _invalid("the access token was not issued by this service") from None
        except jwt.PyJWTError:
            raise _invalid("the access token is invalid") from None
        try:
            return AccessClaims(
                uuid.UUID(str(claims["sub"])),
                uuid.UUID(str(claims["sid"])),
                str(claims["jti"]),
                str(claims.get("role", "user")),
                int(claims["iat"]),
                int(claims["exp"]),
            )
        except (ValueError, TypeError):
            raise _invalid("the access token's claims are malformed") from None


def _expired() -> Unauthorized:
    return Unauthorized("the access token has expired; refresh it", code="token_expired")


def _invalid(detail: str) -> Unauthorized:
    return Unauthorized(detail, code="invalid_token")


def _weak(secret: str, min_bytes: int) -> bool:
    return secret.strip().lower() in KNOWN_WEAK_SECRETS or len(secret.encode()) < min_bytes


def _parse_previous(entries: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        kid, sep, value = str(entry).partition("=")
        if not sep or not kid.strip() or not value:
            raise ConfigError(
                "setting `auth.jwt_previous_secrets` entries look like "
                '"kid=secret" (HS*) or "kid=/path/public.pem"; got one '
                "without '='"
            )
        out[kid.strip()] = value
    return out


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"setting `{setting}`: cannot read {path}: {exc.strerror}") from None
