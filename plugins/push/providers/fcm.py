"""FCM HTTP v1 (docs/push.md "FCM"; ../shared/PROTOCOLS.md "Push").

Auth: the service account's key signs an RS256 JWT (pyjwt) ``{iss: client_email, scope:
firebase.messaging, aud: token_uri, iat, exp = iat + 3600}``, exchanged at ``token_uri``
for an OAuth access token that is cached until five minutes before it expires — one
token fetch per hour, not per notification; concurrent sends share one refresh.

Send: ``POST {endpoint}/v1/projects/{project_id}/messages:send``. Dead tokens (404
``UNREGISTERED``, 400 "not a valid FCM registration token") → :class:`InvalidToken`;
other 400s → :class:`Rejected` (token kept); 401 drops the cached OAuth token and
retries; 429/5xx → :class:`Retry` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import jwt

from .base import (
    Delivery,
    InvalidToken,
    Outcome,
    Rejected,
    Retry,
    parse_retry_after,
    status_outcome,
)

if TYPE_CHECKING:
    from secureconnect.kernel import Kernel

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"
REFRESH_MARGIN = 300.0
MAX_ANSWER = 64 * 1024


class FcmConfigError(ValueError):
    pass


def load_service_account(raw_json: str, path: str) -> dict[str, Any]:
    if not raw_json and path:
        with open(path, encoding="utf-8") as fh:
            raw_json = fh.read()
    if not raw_json:
        raise FcmConfigError(
            "provider 'fcm' is enabled but no service account is configured: set the "
            "secret `push.fcm.credentials_json` (or `push.fcm.credentials_file`)")
    account = json.loads(raw_json)
    missing = [k for k in ("client_email", "private_key", "project_id") if not account.get(k)]
    if missing:
        raise FcmConfigError(f"the FCM service account lacks {', '.join(missing)}")
    return dict(account)


class FcmProvider:
    name = "fcm"

    def __init__(self, kernel: Kernel, account: dict[str, Any], endpoint: str,
                 timeout: float) -> None:
        self.kernel = kernel
        self.account = account
        self.token_uri = str(account.get("token_uri") or DEFAULT_TOKEN_URI)
        self.url = (f"{endpoint.rstrip('/')}/v1/projects/{account['project_id']}"
                    "/messages:send")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        #: OAuth tokens fetched (observable: once per hour, not per notification)
        self.token_fetches = 0

    async def _access_token(self) -> str:
        if self._token is not None and time.monotonic() < self._expires - REFRESH_MARGIN:
            return self._token
        async with self._lock:
            if self._token is not None and time.monotonic() < self._expires - REFRESH_MARGIN:
                return self._token
            now = int(time.time())
            assertion = jwt.encode(
                {"iss": self.account["client_email"], "scope": SCOPE, "aud": self.token_uri,
                 "iat": now, "exp": now + 3600},
                self.account["private_key"], algorithm="RS256",
                headers={"kid": self.account.get("private_key_id")}
                if self.account.get("private_key_id") else None,
            )
            form = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                    "assertion": assertion}
            async with self.kernel.http.post(self.token_uri, data=form, allow_redirects=False,
                                             timeout=self.timeout) as resp:
                body = await resp.content.read(MAX_ANSWER)
                if resp.status != 200:
                    raise _TokenError(resp.status, resp.headers.get("Retry-After"))
            answer = json.loads(body)
            self.token_fetches += 1
            self._token = str(answer["access_token"])
            self._expires = time.monotonic() + float(answer.get("expires_in", 3600))
            return self._token

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            token = await self._access_token()
        except _TokenError as exc:
            return Retry(f"oauth_{exc.status}", parse_retry_after(exc.retry_after))
        message = self._message(delivery)
        async with self.kernel.http.post(
            self.url, json={"message": message}, allow_redirects=False, timeout=self.timeout,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            raw = await resp.content.read(MAX_ANSWER)
            status, retry_after = resp.status, resp.headers.get("Retry-After")
        if status == 401:
            self._token = None
            return Retry("oauth_rejected")
        if status in (400, 404):
            code, text = _error(raw)
            if code == "UNREGISTERED" or (status == 404 and code in ("", "NOT_FOUND")):
                return InvalidToken("unregistered")
            if "not a valid fcm registration token" in text.lower():
                return InvalidToken("invalid_token")
            return Rejected(f"fcm_{status}_{code.lower() or 'error'}")
        return status_outcome(status, retry_after, "fcm")

    def _message(self, d: Delivery) -> dict[str, Any]:
        data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in d.payload.items()
                if v is not None}
        high = d.priority == "high"
        android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL", "ttl": f"{d.ttl}s"}
        apns_headers = {"apns-priority": "10" if high else "5"}
        if d.collapse_key:
            android["collapse_key"] = d.collapse_key
            apns_headers["apns-collapse-id"] = d.collapse_key[:64]
        aps: dict[str, Any] = {"mutable-content": 1, "content-available": 1}
        if isinstance(d.payload.get("badge"), int):
            aps["badge"] = d.payload["badge"]
        return {"token": d.token, "data": data, "android": android,
                "apns": {"headers": apns_headers, "payload": {"aps": aps}}}

    async def close(self) -> None:
        return None


class _TokenError(Exception):
    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"token endpoint answered {status}")
        self.status = status
        self.retry_after = retry_after


def _error(raw: bytes) -> tuple[str, str]:
    """(FCM errorCode or status, message) from an error answer."""
    try:
        err = json.loads(raw).get("error") or {}
    except (ValueError, AttributeError):
        return "", raw.decode("utf-8", "replace")[:200]
    code = ""
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            code = str(detail["errorCode"])
    return code or str(err.get("status") or ""), str(err.get("message") or "")
