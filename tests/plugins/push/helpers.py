"""Helpers for the push tests; they speak only HTTP."""

from __future__ import annotations

import re
from typing import Any

from secureconnect.testing.accounts import TestUser


async def add_device(client: Any, user: TestUser, platform: str, token: Any,
                     status: int = 201) -> Any:
    r = await client.post("/v1/push/devices", json={"platform": platform, "token": token},
                          headers=user.headers)
    assert r.status == status, await r.text()
    return await r.json()


async def devices(client: Any, user: TestUser) -> list[dict[str, Any]]:
    r = await client.get("/v1/push/devices", headers=user.headers)
    assert r.status == 200, await r.text()
    return list((await r.json())["devices"])


async def send(client: Any, user: TestUser, conversation_id: str, content: str = "hello",
               **extra: Any) -> Any:
    r = await client.post(f"/v1/conversations/{conversation_id}/messages",
                          json={"content": content, "message_type": "text", **extra},
                          headers=user.headers)
    assert r.status == 201, await r.text()
    return await r.json()


async def metric(client: Any, name: str, **labels: str) -> float:
    text = await (await client.get("/metrics")).text()
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total
