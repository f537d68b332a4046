"""Device registration, mutes and the SSRF guard, over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from secureconnect.testing.accounts import register_and_login

from ..polls.helpers import make_team
from .helpers import add_device, devices

FCM_TOKEN = "fcm-token-aaaaaaaaaaaaaaaaaaaaaaaa"


async def test_register_list_move_and_delete(push_client: Any) -> None:
    client = await push_client()
    alice, bob = await register_and_login(client), await register_and_login(client)
    dev = await add_device(client, alice, "fcm", FCM_TOKEN)
    assert dev["platform"] == "fcm" and "token" not in dev
    assert [d["id"] for d in await devices(client, alice)] == [dev["id"]]
    # the same token again, by bob: it moves (one token, one owner)
    moved = await add_device(client, bob, "fcm", FCM_TOKEN)
    assert moved["id"] == dev["id"]
    assert await devices(client, alice) == []
    assert [d["id"] for d in await devices(client, bob)] == [dev["id"]]
    r = await client.delete(f"/v1/push/devices/{dev['id']}", headers=alice.headers)
    assert r.status == 404 and (await r.json())["code"] == "push_device_not_found"
    r = await client.delete(f"/v1/push/devices/{dev['id']}", headers=bob.headers)
    assert r.status == 204
    assert await devices(client, bob) == []


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:9/hook",
    "http://10.1.2.3/hook",
    "http://[::1]/hook",
    "http://localhost/hook",
    "ftp://example.com/hook",
])
async def test_webhook_urls_to_internal_addresses_are_refused(push_client: Any,
                                                             url: str) -> None:
    client = await push_client(webhook_allowed_hosts=["*"])
    user = await register_and_login(client)
    body = await add_device(client, user, "webhook", url, status=422)
    assert body["code"] == "push_url_not_allowed"


async def test_webhook_allow_list(push_client: Any) -> None:
    client = await push_client(webhook_allowed_hosts=["127.0.0.1", "*.example.com"])
    user = await register_and_login(client)
    await add_device(client, user, "webhook", "http://127.0.0.1:9/hook")
    await add_device(client, user, "webhook", "https://push.example.com/notify")
    r = await add_device(client, user, "webhook", "https://evil.test/notify", status=422)
    assert r["code"] == "push_url_not_allowed"
    await add_device(client, user, "webhook", "http://10.0.0.1/x", status=422)


async def test_bad_bodies(push_client: Any) -> None:
    client = await push_client()
    user = await register_and_login(client)
    r = await client.post("/v1/push/devices", json={"platform": "sms", "token": "x"},
                          headers=user.headers)
    assert r.status == 422 and (await r.json())["code"] == "validation_error"
    await add_device(client, user, "apns", "not-hex", status=422)
    await add_device(client, user, "webpush", {"endpoint": "https://x"}, status=422)


async def test_mute_requires_membership(push_client: Any) -> None:
    client = await push_client()
    team = await make_team(client, 1)
    outsider = await register_and_login(client)
    url = f"/v1/conversations/{team.conversation_id}/notifications"
    body = {"muted_until": "2999-01-01T00:00:00Z"}
    r = await client.put(url, json=body, headers=outsider.headers)
    assert r.status == 403 and (await r.json())["code"] == "not_a_participant"
    r = await client.put(url, json=body, headers=team.members[0].headers)
    assert r.status == 200
    assert (await r.json())["muted_until"].startswith("2999-01-01")
    r = await client.put(url, json={"muted_until": None}, headers=team.members[0].headers)
    assert r.status == 200 and (await r.json())["muted_until"] is None


async def test_hook_sc_sessions_revoked(push_client: Any) -> None:
    """Logout removes the devices registered with that session, not the others."""
    from secureconnect.testing.accounts import login

    client = await push_client()
    user = await register_and_login(client)
    await add_device(client, user, "fcm", FCM_TOKEN)
    other = await login(client, user.email)
    other_headers = {"Authorization": f"Bearer {other['access_token']}"}
    r = await client.post("/v1/push/devices", headers=other_headers,
                          json={"platform": "fcm", "token": FCM_TOKEN + "other"})
    assert r.status == 201
    kept = (await r.json())["id"]
    r = await client.post("/v1/auth/logout", headers=user.headers)
    assert r.status == 204
    r = await client.get("/v1/push/devices", headers=other_headers)
    assert [d["id"] for d in (await r.json())["devices"]] == [kept]


async def test_more_devices_than_the_limit_evict_the_oldest(push_client: Any) -> None:
    client = await push_client(max_devices_per_user=2)
    user = await register_and_login(client)
    first = await add_device(client, user, "fcm", FCM_TOKEN + "1")
    await add_device(client, user, "fcm", FCM_TOKEN + "2")
    await add_device(client, user, "fcm", FCM_TOKEN + "3")
    ids = [d["id"] for d in await devices(client, user)]
    assert len(ids) == 2 and first["id"] not in ids


async def test_leaving_a_conversation_forgets_its_mute(push_client: Any) -> None:
    from sqlalchemy import select

    from secureconnect.app import KERNEL
    from secureconnect.testing.helpers import wait_for
    from secureconnect_plugins.push.models import mutes

    client = await push_client()
    team = await make_team(client, 1)
    member = team.members[0]
    r = await client.put(f"/v1/conversations/{team.conversation_id}/notifications",
                         json={"muted_until": "2999-01-01T00:00:00Z"}, headers=member.headers)
    assert r.status == 200

    async def muted() -> list[Any]:
        async with client.app[KERNEL].db.connect() as conn:
            return list(await conn.execute(select(mutes)))

    assert len(await muted()) == 1
    r = await client.delete(
        f"/v1/conversations/{team.conversation_id}/participants/{member.user_id}",
        headers=member.headers)
    assert r.status == 204
    await wait_for(lambda: _none(muted()), message="the mute forgotten")


async def _none(rows: Any) -> bool:
    return not await rows


async def test_devices_outlive_their_session_when_the_setting_says_so(
        push_client: Any) -> None:
    client = await push_client(remove_devices_with_session=False)
    user = await register_and_login(client)
    device = await add_device(client, user, "fcm", FCM_TOKEN)
    r = await client.post("/v1/auth/logout", headers=user.headers)
    assert r.status == 204
    from secureconnect.testing.accounts import login

    again = await login(client, user.email)
    r = await client.get("/v1/push/devices",
                         headers={"Authorization": f"Bearer {again['access_token']}"})
    assert [d["id"] for d in (await r.json())["devices"]] == [device["id"]]
