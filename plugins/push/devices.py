"""Device registration rules: what a token of each platform looks like, and its identity.

* ``fcm`` / ``apns`` — an opaque provider token (APNs: hex).
* ``webpush`` — the browser's PushSubscription JSON ``{endpoint, keys: {p256dh, auth}}``
  (an object or its JSON text); the endpoint passes the SSRF guard with
  ``push.webpush.allowed_hosts``. Its identity is the endpoint.
* ``webhook`` — the gateway URL; passes the guard with ``push.webhook_allowed_hosts``.

A token's identity hash (platform + normalised token) is unique in ``push_devices``:
one token, one owner.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from secureconnect.errors import Unprocessable

from .urlguard import check_url

MAX_TOKEN = 4096
_OPAQUE = re.compile(r"^[A-Za-z0-9_:\-.=+/]{8,4096}$")
_HEX = re.compile(r"^[0-9a-fA-F]{32,200}$")


class InvalidDeviceToken(Unprocessable):
    code = "invalid_push_token"


def _b64url_len(value: Any, field: str, sizes: Sequence[int]) -> str:
    if not isinstance(value, str):
        raise InvalidDeviceToken(f"webpush subscription: keys.{field} must be a string")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        raise InvalidDeviceToken(f"webpush subscription: keys.{field} is not base64url") from None
    if len(raw) not in sizes:
        raise InvalidDeviceToken(f"webpush subscription: keys.{field} has the wrong length")
    return value


def normalise(platform: str, token: Any, *, webhook_hosts: Sequence[str],
              webpush_hosts: Sequence[str]) -> tuple[str, str]:
    """(token as stored, identity hash) or raise a 422."""
    if platform == "webpush":
        sub = token
        if isinstance(token, str):
            try:
                sub = json.loads(token)
            except ValueError:
                raise InvalidDeviceToken(
                    "webpush token must be the PushSubscription JSON") from None
        if not isinstance(sub, dict) or not isinstance(sub.get("keys"), dict):
            raise InvalidDeviceToken(
                "webpush token must be a PushSubscription {endpoint, keys: {p256dh, auth}}")
        endpoint = sub.get("endpoint")
        if not isinstance(endpoint, str) or len(endpoint) > 2048:
            raise InvalidDeviceToken("webpush subscription: endpoint must be a URL")
        check_url(endpoint, webpush_hosts, what="webpush endpoint")
        keys = {"p256dh": _b64url_len(sub["keys"].get("p256dh"), "p256dh", (65,)),
                "auth": _b64url_len(sub["keys"].get("auth"), "auth", (16,))}
        stored = json.dumps({"endpoint": endpoint, "keys": keys}, sort_keys=True)
        return stored, _hash(platform, endpoint)
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise InvalidDeviceToken(f"{platform} token must be a non-empty string "
                                 f"of at most {MAX_TOKEN} characters")
    if platform == "webhook":
        check_url(token, webhook_hosts, what="webhook URL")
    elif platform == "apns" and not _HEX.match(token):
        raise InvalidDeviceToken("apns token must be the device token in hex")
    elif platform == "fcm" and not _OPAQUE.match(token):
        raise InvalidDeviceToken("fcm token has characters a registration token never has")
    return token, _hash(platform, token)


def _hash(platform: str, identity: str) -> str:
    return hashlib.sha256(f"{platform}\0{identity}".encode()).hexdigest()
