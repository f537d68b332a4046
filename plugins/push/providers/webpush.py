"""Web Push: RFC 8030 delivery, RFC 8291 ``aes128gcm`` payload encryption (http-ece),
RFC 8292 VAPID (docs/push.md "Web Push").

* Each send encrypts the payload for the subscription (ephemeral ECDH P-256 key, the
  subscription's ``p256dh`` and 16-byte ``auth`` secret, a random salt).
* ``Authorization: vapid t=<ES256 JWT {aud: endpoint origin, exp, sub}>, k=<public key>``;
  one JWT per origin, reused until an hour before its 12-hour expiry.
* Headers ``TTL`` (required), ``Urgency`` (high/normal), ``Topic`` (the collapse key,
  hashed to 32 URL-safe characters so it never leaks the conversation id).
* 404/410 → the subscription is gone (:class:`InvalidToken`); 429/5xx retried.
* The endpoint is a user-supplied URL: the SSRF guard runs before every send.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secureconnect.errors import ConfigError

from ..urlguard import UnsafeUrl, pinned
from .base import Delivery, InvalidToken, Outcome, Rejected, status_outcome

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

    from ..settings import PushSettings

JWT_LIFETIME = 12 * 3600
JWT_REFRESH = 3600
MAX_PAYLOAD = 3993  # 4096 minus the aes128gcm header (86) and the tag + delimiter (17)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_vapid_key(raw: str) -> ec.EllipticCurvePrivateKey:
    """A PEM private key, or the raw 32-byte private scalar in base64url."""
    raw = raw.strip()
    if raw.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(raw.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the VAPID key must be an EC P-256 key")
        return key
    return ec.derive_private_key(int.from_bytes(b64url_decode(raw), "big"), ec.SECP256R1())


class WebPushProvider:
    name = "webpush"

    def __init__(self, kernel: Kernel, key: ec.EllipticCurvePrivateKey, subject: str,
                 allowed_hosts: tuple[str, ...], timeout: float) -> None:
        self.kernel = kernel
        self.key = key
        self.subject = subject
        self.allowed_hosts = allowed_hosts
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.public_key = b64url(key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint))
        self._jwts: dict[str, tuple[str, float]] = {}
        #: VAPID JWTs signed (observable: once per origin and ~11 h, not per send)
        self.jwt_signatures = 0

    @staticmethod
    def config(s: PushSettings) -> tuple[ec.EllipticCurvePrivateKey, str]:
        """(VAPID key, subject) from the settings, or a :class:`ConfigError`."""
        raw = str(s.webpush.get("vapid_private_key", ""))
        subject = str(s.webpush.get("vapid_subject", ""))
        if not raw or not subject:
            raise ConfigError(
                "plugin 'push': provider 'webpush' needs the secret "
                "`push.webpush.vapid_private_key` and `push.webpush.vapid_subject` "
                "(mailto: or https:)")
        try:
            return load_vapid_key(raw), subject
        except ValueError as exc:
            raise ConfigError(f"plugin 'push': push.webpush.vapid_private_key: {exc}") from None

    @classmethod
    def from_settings(cls, kernel: Kernel, s: PushSettings) -> WebPushProvider:
        key, subject = cls.config(s)
        return cls(kernel, key, subject, tuple(s.webpush.get("allowed_hosts", ())),
                   s.send_timeout)

    def _vapid(self, endpoint: str) -> str:
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        now = time.time()
        cached = self._jwts.get(origin)
        if cached is None or cached[1] - now < JWT_REFRESH:
            exp = now + JWT_LIFETIME
            token = jwt.encode({"aud": origin, "exp": int(exp), "sub": self.subject},
                               self.key, algorithm="ES256")
            self.jwt_signatures += 1
            if len(self._jwts) > 1000:
                self._jwts.clear()
            cached = self._jwts[origin] = (token, exp)
        return f"vapid t={cached[0]}, k={self.public_key}"

    def encrypt(self, subscription: dict[str, Any], payload: bytes) -> bytes:
        keys = subscription["keys"]
        return bytes(http_ece.encrypt(
            payload, salt=os.urandom(16),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=b64url_decode(keys["p256dh"]), auth_secret=b64url_decode(keys["auth"]),
            version="aes128gcm"))

    async def send(self, delivery: Delivery) -> Outcome:
        subscription = json.loads(delivery.token)
        endpoint = str(subscription["endpoint"])
        try:
            target = await pinned(endpoint, self.allowed_hosts)
        except UnsafeUrl:
            return Rejected("unsafe_url")
        plain = json.dumps(delivery.payload, separators=(",", ":")).encode()
        if len(plain) > MAX_PAYLOAD:
            return Rejected("payload_too_large")
        headers = {
            "TTL": str(delivery.ttl),
            "Urgency": "high" if delivery.priority == "high" else "normal",
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self._vapid(endpoint),
            **target.headers,
        }
        if delivery.collapse_key:
            headers["Topic"] = b64url(hashlib.sha256(delivery.collapse_key.encode()).digest())[:32]
        async with self.kernel.http.post(target.url, data=self.encrypt(subscription, plain),
                                         headers=headers, allow_redirects=False,
                                         server_hostname=target.server_hostname,
                                         timeout=self.timeout) as resp:
            await resp.content.read(4096)
            if resp.status in (404, 410):
                return InvalidToken(f"gone_{resp.status}")
            return status_outcome(resp.status, resp.headers.get("Retry-After"), "webpush")

    async def close(self) -> None:
        return None
