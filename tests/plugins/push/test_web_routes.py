"""Push's routes for the web client and the admin console: the VAPID public key, and
dead letters listed / retried / dropped by admins only (audited)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secureconnect.app import KERNEL
from secureconnect.auth.service import create_user
from secureconnect.testing.accounts import DEFAULT_PASSWORD, login, register_and_login
from secureconnect_plugins.push.models import dead_letters, outbox


def _vapid() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    raw = key.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    return pem, base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


async def test_vapid_public_key(push_client: Any) -> None:
    pem, public = _vapid()
    client = await push_client(providers=["webpush"], webpush={
        "vapid_private_key": pem, "vapid_subject": "mailto:ops@example.com"})
    user = await register_and_login(client)
    r = await client.get("/v1/push/webpush/vapid-public-key", headers=user.headers)
    assert r.status == 200 and await r.json() == {"public_key": public}
    assert (await client.get("/v1/push/webpush/vapid-public-key")).status == 401


async def test_no_vapid_key_without_webpush(push_client: Any) -> None:
    client = await push_client()
    user = await register_and_login(client)
    r = await client.get("/v1/push/webpush/vapid-public-key", headers=user.headers)
    assert r.status == 404 and (await r.json())["code"] == "webpush_not_configured"


async def _dead(client: Any, n: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    now = datetime.now(UTC)

    def run(conn: Any) -> None:
        for i in ids:
            conn.execute(dead_letters.insert().values(
                id=i, device_id=str(uuid.uuid4()), user_id=str(uuid.uuid4()),
                provider="webhook", payload='{"type": "test"}', collapse_key=None,
                priority="high", attempts=8, last_error="http_500", created_at=now,
                failed_at=now))

    await client.app[KERNEL].db.write(run)
    return ids


async def test_admins_list_retry_and_drop_dead_letters(push_client: Any) -> None:
    client = await push_client(poll_interval=30)
    kernel = client.app[KERNEL]
    await create_user(kernel, "root@example.com", DEFAULT_PASSWORD, "Root", admin=True)
    admin = {"Authorization": f"Bearer {(await login(client, 'root@example.com'))['access_token']}"}
    user = await register_and_login(client)
    first, second, third = await _dead(client, 3)

    for method, path, body in (("GET", "/v1/admin/push/dead-letters", None),
                               ("POST", "/v1/admin/push/dead-letter-retries", {"all": True}),
                               ("DELETE", f"/v1/admin/push/dead-letters/{first}", None)):
        r = await client.request(method, path, json=body, headers=user.headers)
        assert r.status == 403 and (await r.json())["code"] == "admin_only", path

    listed = await (await client.get("/v1/admin/push/dead-letters", headers=admin)).json()
    rows = listed["dead_letters"]
    assert {d["id"] for d in rows} == {first, second, third}
    assert rows[0]["last_error"] == "http_500" and "payload" not in rows[0]

    r = await client.post("/v1/admin/push/dead-letter-retries", headers=admin,
                          json={"ids": [first]})
    assert await r.json() == {"retried": 1}
    async with kernel.db.connect() as conn:
        queued = (await conn.execute(outbox.select().where(outbox.c.id == first))).first()
    assert queued is not None and queued.attempts == 0
    assert (await client.delete(f"/v1/admin/push/dead-letters/{second}", headers=admin)
            ).status == 204
    for gone in (second, "not-an-id"):
        r = await client.delete(f"/v1/admin/push/dead-letters/{gone}", headers=admin)
        assert r.status == 404 and (await r.json())["code"] == "dead_letter_not_found"
    for bad in ({}, {"ids": [], "all": False}, {"ids": [third], "all": True}, {"all": "yes"}):
        r = await client.post("/v1/admin/push/dead-letter-retries", headers=admin, json=bad)
        assert r.status in (400, 422), bad
    left = await (await client.get("/v1/admin/push/dead-letters", headers=admin)).json()
    assert [d["id"] for d in left["dead_letters"]] == [third]
    actions = {e["action"] for e in kernel.state["web.audit"]}
    assert {"push.dead_letters.retry", "push.dead_letters.drop"} <= actions


async def test_no_dead_letter_routes_without_the_console(push_client: Any) -> None:
    client = await push_client({"web": {"admin": False}})
    spec = await (await client.get("/openapi.json")).json()
    assert not [p for p in spec["paths"] if p.startswith("/v1/admin/push")]
    assert "/v1/push/webpush/vapid-public-key" in spec["paths"]
