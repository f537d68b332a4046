"""HMAC-SHA256 signed, expiring URLs for the local back end.

The signature covers the HTTP method, the file id, the expiry (Unix seconds) and the
largest body the URL admits, so none of them can be changed without the key; it is
compared in constant time. A URL carries ``expires``, ``max`` and ``sig`` query
parameters; the path holds only the file id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

from secureconnect.errors import Forbidden


class BadSignature(Forbidden):
    code = "invalid_signature"


class UrlExpired(Forbidden):
    code = "url_expired"


def _mac(secret: bytes, method: str, file_id: str, expires: int, max_size: int) -> str:
    message = f"{method.upper()}\n{file_id}\n{expires}\n{max_size}".encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signed_query(secret: bytes, method: str, file_id: str, expires: int, max_size: int) -> str:
    sig = _mac(secret, method, file_id, expires, max_size)
    return urlencode({"expires": expires, "max": max_size, "sig": sig})


def verify(secret: bytes, method: str, file_id: str, query: dict[str, str]) -> int:
    """Check a signed request; returns the signed ``max`` body size or raises 403."""
    try:
        expires = int(query["expires"])
        max_size = int(query["max"])
        sig = query["sig"]
    except (KeyError, ValueError):
        raise BadSignature("the URL is not a valid signed drive URL") from None
    expected = _mac(secret, method, file_id, expires, max_size)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise BadSignature("the URL signature does not match")
    if expires < time.time():
        raise UrlExpired("the URL has expired; ask for a new one")
    return max_size
