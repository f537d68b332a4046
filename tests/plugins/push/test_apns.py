"""APNs over real HTTP/2 (a fake h2c server): headers, a provider JWT reused across
sends, content-free alerts, dead tokens deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secureconnect.testing.helpers import wait_for

from ..polls.helpers import make_team
from .fake_apns import FakeApns
from .fakes import FakeProvider
from .helpers import add_device, devices, send
from .test_delivery import _answer, _outbox_empty

TOKEN = "ab" * 32


@pytest.fixture
async def apns(fake: FakeProvider) -> AsyncIterator[FakeApns]:
    server = FakeApns(fake)
    await server.start()
    yield server
    await server.stop()


def _settings(apns: FakeApns) -> tuple[dict[str, Any], ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"providers": ["apns"], "apns": {
        "endpoint": apns.url, "key_id": "KEY123", "team_id": "TEAM42",
        "topic": "com.example.chat", "private_key": pem}}, key.public_key()


async def test_apns_headers_jwt_reused_content_free(push_client: Any, fake: FakeProvider,
                                                   apns: FakeApns) -> None:
    push, public = _settings(apns)
    client = await push_client(**push)
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "apns", TOKEN)
    for i in range(3):
        await send(client, team.owner, team.conversation_id, f"secret words {i}",
                   is_encrypted=True)
    await wait_for(lambda: len(fake.of("apns")) == 3, message="three APNs pushes")
    rec = fake.of("apns")[0]
    h = rec.headers
    assert rec.path == f"/3/device/{TOKEN}"
    assert h["apns-topic"] == "com.example.chat" and h["apns-push-type"] == "alert"
    assert h["apns-priority"] == "10"
    assert h["apns-collapse-id"] == f"conv:{team.conversation_id}"
    scheme, token = h["authorization"].split(" ")
    assert scheme == "bearer"
    assert jwt.get_unverified_header(token)["kid"] == "KEY123"
    assert jwt.decode(token, public, algorithms=["ES256"])["iss"] == "TEAM42"
    assert len({r.headers["authorization"] for r in fake.of("apns")}) == 1
    for r in fake.of("apns"):
        assert b"secret" not in r.body
        assert r.json()["aps"]["alert"] == {"loc-key": "NEW_MESSAGE"}


@pytest.mark.parametrize(("status", "reason"), [(410, "Unregistered"),
                                                (400, "BadDeviceToken"),
                                                (400, "DeviceTokenNotForTopic")])
async def test_apns_dead_token_deleted(push_client: Any, fake: FakeProvider, apns: FakeApns,
                                       status: int, reason: str) -> None:
    push, _ = _settings(apns)
    fake.script = _answer("apns", status, {"reason": reason})
    client = await push_client(**push)
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "apns", TOKEN)
    await send(client, team.owner, team.conversation_id)
    await wait_for(lambda: len(fake.received) == 1, message="a push")
    await wait_for(lambda: _outbox_empty(client), message="drained")
    assert await devices(client, team.members[0]) == []
