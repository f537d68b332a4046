"""Web Push against a fake push service: RFC 8291 encryption the subscriber can
decrypt, a VAPID JWT that verifies, RFC 8030 headers, 410 deletes the subscription."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secureconnect.testing.helpers import wait_for

from ..polls.helpers import make_team
from .fakes import FakeProvider
from .helpers import add_device, devices, send
from .test_delivery import _answer, _outbox_empty


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Subscriber:
    """A browser's side of a push subscription."""

    def __init__(self, endpoint: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.subscription = {"endpoint": endpoint,
                             "keys": {"p256dh": _b64(public), "auth": _b64(self.auth)}}

    def decrypt(self, body: bytes) -> Any:
        return json.loads(http_ece.decrypt(body, private_key=self.key,
                                           auth_secret=self.auth, version="aes128gcm"))


def _vapid_pem() -> tuple[str, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return pem, key.public_key()


def _settings() -> tuple[dict[str, Any], ec.EllipticCurvePublicKey]:
    pem, public = _vapid_pem()
    return {"providers": ["webpush"],
            "webpush": {"vapid_private_key": pem, "vapid_subject": "mailto:ops@example.com",
                        "allowed_hosts": ["127.0.0.1"]}}, public


async def test_webpush_encrypted_vapid_signed_content_free(push_client: Any,
                                                          fake: FakeProvider) -> None:
    push, vapid_public = _settings()
    client = await push_client(**push)
    team = await make_team(client, 1)
    browser = Subscriber(f"{fake.url}/wp/one")
    await add_device(client, team.members[0], "webpush", browser.subscription)
    secret = "the plaintext of an encrypted message"
    for i in range(3):
        message = await send(client, team.owner, team.conversation_id, f"{secret} {i}",
                             is_encrypted=True)
    await wait_for(lambda: len(fake.of("webpush")) == 3, message="three web pushes")
    rec = fake.of("webpush")[-1]
    assert secret.encode() not in rec.body
    payload = browser.decrypt(rec.body)
    assert payload["message_id"] == message["id"] and payload["encrypted"] is True
    assert "body" not in payload
    h = rec.headers
    assert h["Content-Encoding"] == "aes128gcm" and h["TTL"] == "86400"
    assert h["Urgency"] == "high" and len(h["Topic"]) == 32
    assert team.conversation_id not in h["Topic"]
    scheme, params = h["Authorization"].split(" ", 1)
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert scheme == "vapid"
    claims = jwt.decode(fields["t"], vapid_public, algorithms=["ES256"], audience=fake.url)
    assert claims["sub"] == "mailto:ops@example.com"
    # one JWT for the origin, reused across sends
    assert len({r.headers["Authorization"] for r in fake.of("webpush")}) == 1


@pytest.mark.parametrize("status", [404, 410])
async def test_webpush_gone_deletes_the_subscription(push_client: Any, fake: FakeProvider,
                                                    status: int) -> None:
    push, _ = _settings()
    fake.script = _answer("webpush", status, {})
    client = await push_client(**push)
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "webpush",
                     Subscriber(f"{fake.url}/wp/gone").subscription)
    await send(client, team.owner, team.conversation_id)
    await wait_for(lambda: len(fake.received) == 1, message="a push")
    await wait_for(lambda: _outbox_empty(client), message="drained")
    assert await devices(client, team.members[0]) == []


async def test_webpush_endpoint_outside_push_services_is_refused(push_client: Any) -> None:
    push, _ = _settings()
    push["webpush"]["allowed_hosts"] = ["*.push.services.mozilla.com"]
    client = await push_client(**push)
    team = await make_team(client, 1)
    for url in ("https://evil.example/wp", "http://169.254.169.254/latest"):
        body = await add_device(client, team.members[0], "webpush",
                                Subscriber(url).subscription, status=422)
        assert body["code"] == "push_url_not_allowed"
