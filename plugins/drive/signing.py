"""HMAC-SHA256 signed, expiring URLs for the local back end.

The signature covers the HTTP method, the file id, the expiry (Unix seconds), the
largest body the URL admits and, for downloads, the name and type to serve, so none of
them can be changed without the key; it is compared in constant time. A URL carries
``expires``, ``max`` (download URLs also ``name`` and ``type``) and ``sig`` query
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


#: optional signed parameters: a download URL carries the file's name and type, so the
#: blob route can serve it without a database read
EXTRAS = ("name", "type")


def _mac(secret: bytes, method: str, file_id: str, expires: int, max_size: int,
         extra: dict[str, str]) -> str:
    fields = [method.upper(), file_id, str(expires), str(max_size)]
    fields += [f"{k}={extra[k]}" for k in EXTRAS if k in extra]
    message = "\n".join(fields).encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def signed_query(secret: bytes, method: str, file_id: str, expires: int, max_size: int,
                 extra: dict[str, str] | None = None) -> str:
    extra = extra or {}
    sig = _mac(secret, method, file_id, expires, max_size, extra)
    return urlencode({"expires": expires, "max": max_size,
                      **{k: extra[k] for k in EXTRAS if k in extra}, "sig": sig})


def verify(secret: bytes, method: str, file_id: str, query: dict[str, str]) -> int:
    """Check a signed request; returns the signed ``max`` body size or raises 403."""
    try:
        expires = int(query["expires"])
        max_size = int(query["max"])
        sig = query["sig"]
    except (KeyError, ValueError):
        raise BadSignature("the URL is not a valid signed drive URL") from None
    extra = {k: query[k] for k in EXTRAS if k in query}
    expected = _mac(secret, method, file_id, expires, max_size, extra)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise BadSignature("the URL signature does not match")
    if expires < time.time():
        raise UrlExpired("the URL has expired; ask for a new one")
    return max_size
