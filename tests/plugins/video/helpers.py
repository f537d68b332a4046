"""Helpers for the video black-box tests; they speak only HTTP and WebSocket."""

from __future__ import annotations

from typing import Any

from secureconnect.testing import WsTester
from secureconnect.testing.accounts import TestUser, register_many
from secureconnect.testing.helpers import merge_settings

SQLITE_FILE = "sqlite+aiosqlite:///{data_dir}/video-test.db"


#: shared helpers of secureconnect.testing, under the names these tests use
merge = merge_settings
users = register_many
#: fast timers for tests (grace and heartbeat in seconds)
FAST = {"video": {"ring_timeout": 1.5, "reconnect_grace": 1.0, "heartbeat_interval": 0.2}}


async def conversation(client: Any, owner: TestUser, others: list[TestUser],
                       kind: str = "group") -> str:
    body: dict[str, Any] = {"type": kind, "participant_ids": [m.user_id for m in others]}
    if kind == "group":
        body["name"] = "team"
    r = await client.post("/v1/conversations", json=body, headers=owner.headers)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def call_api(client: Any, user: TestUser, method: str, path: str, status: int = 200,
                   json: Any = None) -> Any:
    r = await client.request(method, path, json=json, headers=user.headers)
    assert r.status == status, f"{method} {path}: {r.status} {await r.text()}"
    return await r.json()


async def start_call(client: Any, user: TestUser, cid: str, kind: str = "video",
                     status: int = 201) -> Any:
    return await call_api(client, user, "POST", f"/v1/conversations/{cid}/calls", status,
                          {"type": kind})


async def act(client: Any, user: TestUser, call_id: str, action: str, status: int = 200
              ) -> Any:
    return await call_api(client, user, "POST", f"/v1/calls/{call_id}/{action}", status)


def of_call(call_id: str) -> Any:
    return lambda f: (f.get("data") or {}).get("call_id") == call_id


async def expect_event(ws: WsTester, event: str, call_id: str, timeout: float = 5.0,
                       **fields: Any) -> dict[str, Any]:
    def match(f: dict[str, Any]) -> bool:
        data = f.get("data") or {}
        return data.get("call_id") == call_id and all(data.get(k) == v
                                                      for k, v in fields.items())
    frame = await ws.expect(event, match, timeout=timeout)
    return dict(frame["data"])


def frames(ws: WsTester, prefix: str = "call.") -> list[tuple[str, dict[str, Any]]]:
    """Every call event this socket received so far, in order."""
    return [(f["type"], f["data"]) for f in ws.seen if str(f.get("type", "")).startswith(prefix)]
