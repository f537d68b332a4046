"""APNs over HTTP/2 with token (JWT) authentication (docs/push.md "APNs").

* Provider token: an ES256 JWT ``{iss: team_id, iat}`` with header ``kid = key_id``,
  signed once and reused for ``push.apns.token_lifetime`` seconds (Apple accepts 20-60
  min; re-signing per request gets ``429 TooManyProviderTokenUpdates``); a 403
  ``ExpiredProviderToken``/``InvalidProviderToken`` drops it early.
* ``POST /3/device/<token>`` with ``apns-topic``, ``apns-push-type`` (``alert``),
  ``apns-priority`` (10 high / 5 normal), ``apns-expiration``, ``apns-collapse-id``.
* Dead tokens: 410 ``Unregistered``, 400 ``BadDeviceToken`` / ``DeviceTokenNotForTopic``.
* APNs speaks only HTTP/2, which aiohttp (``kernel.http``) cannot: this provider owns
  one ``httpx.AsyncClient(http2=True)`` (the ``push`` extra), closed with the app. An
  ``http://`` endpoint (tests) uses HTTP/2 with prior knowledge.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import jwt

from secureconnect.errors import ConfigError

from .base import Delivery, InvalidToken, Outcome, Rejected, Retry, status_outcome

if TYPE_CHECKING:
    import httpx

    from ..settings import PushSettings

DEAD_REASONS = frozenset({"BadDeviceToken", "DeviceTokenNotForTopic", "Unregistered"})
TOKEN_REASONS = frozenset({"ExpiredProviderToken", "InvalidProviderToken"})


class ApnsProvider:
    name = "apns"

    def __init__(self, endpoint: str, key_id: str, team_id: str, topic: str,
                 private_key: str, token_lifetime: float, timeout: float) -> None:
        import httpx

        self.endpoint = endpoint.rstrip("/")
        self.key_id, self.team_id, self.topic = key_id, team_id, topic
        self.private_key = private_key
        self.token_lifetime = token_lifetime
        h2c = self.endpoint.startswith("http://")
        self.client: httpx.AsyncClient = httpx.AsyncClient(
            http2=True, http1=not h2c, timeout=timeout, follow_redirects=False,
            limits=httpx.Limits(max_connections=4))
        self._jwt: tuple[str, float] | None = None
        #: provider JWTs signed (observable: once per token_lifetime, not per send)
        self.jwt_signatures = 0

    @staticmethod
    def config(s: PushSettings) -> dict[str, Any]:
        """The provider's settings, checked, or a :class:`ConfigError`."""
        a = s.apns
        missing = [k for k in ("key_id", "team_id", "topic", "private_key") if not a.get(k)]
        if missing:
            raise ConfigError("plugin 'push': provider 'apns' needs "
                              + ", ".join(f"`push.apns.{k}`" for k in missing))
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise ConfigError("plugin 'push': provider 'apns' needs the `push` extra "
                              "(pip install 'secureconnect[push]')") from None
        return {"endpoint": str(a["endpoint"]), "key_id": str(a["key_id"]),
                "team_id": str(a["team_id"]), "topic": str(a["topic"]),
                "private_key": str(a["private_key"]),
                "token_lifetime": float(a.get("token_lifetime", 2400))}

    @classmethod
    def from_settings(cls, s: PushSettings) -> ApnsProvider:
        return cls(**cls.config(s), timeout=s.send_timeout)

    def provider_token(self) -> str:
        now = time.time()
        if self._jwt is None or now - self._jwt[1] >= self.token_lifetime:
            token = jwt.encode({"iss": self.team_id, "iat": int(now)}, self.private_key,
                               algorithm="ES256", headers={"kid": self.key_id})
            self.jwt_signatures += 1
            self._jwt = (token, now)
        return self._jwt[0]

    def body(self, d: Delivery) -> dict[str, Any]:
        p = d.payload
        aps: dict[str, Any] = {"mutable-content": 1, "sound": "default"}
        if isinstance(p.get("badge"), int):
            aps["badge"] = p["badge"]
        if isinstance(p.get("body"), str):
            aps["alert"] = {"body": p["body"]}
        else:  # content-free: the app's extension fetches (and decrypts) the message
            aps["alert"] = {"loc-key": "NEW_MESSAGE" if p.get("type") == "message" else "TEST"}
        custom = {k: v for k, v in p.items() if k not in ("body", "badge")}
        return {"aps": aps, "sc": custom}

    async def send(self, d: Delivery) -> Outcome:
        headers = {
            "authorization": f"bearer {self.provider_token()}",
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": "10" if d.priority == "high" else "5",
            "apns-expiration": str(int(time.time()) + d.ttl),
        }
        if d.collapse_key:
            headers["apns-collapse-id"] = d.collapse_key[:64]
        resp = await self.client.post(f"{self.endpoint}/3/device/{d.token}",
                                      content=json.dumps(self.body(d)).encode(),
                                      headers=headers)
        if resp.status_code == 200:
            return status_outcome(200, None, "apns")
        try:
            reason = str(json.loads(resp.content[:4096]).get("reason", ""))
        except (ValueError, AttributeError):
            reason = ""
        if resp.status_code == 410 or reason in DEAD_REASONS:
            return InvalidToken(reason or "unregistered")
        if resp.status_code == 403 and reason in TOKEN_REASONS:
            self._jwt = None
            return Retry(reason)
        outcome = status_outcome(resp.status_code, resp.headers.get("retry-after"), "apns")
        if isinstance(outcome, Rejected) and reason:
            return Rejected(f"apns_{reason}")
        return outcome

    async def close(self) -> None:
        await self.client.aclose()
