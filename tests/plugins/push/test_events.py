"""The send path's share of push: one ``push_pending`` row per message (no look-ups, no
content it may not show), expanded into per-device outbox rows by a delivering
instance exactly once — also when the worker that claimed it died."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlalchemy import select

from secureconnect.testing.helpers import wait_for

from ..polls.helpers import make_team
from .fakes import FakeProvider
from .helpers import add_device, metric, send

SECRET = "c2VjcmV0LWNpcGhlcnRleHQtWFlaWllY"


def _service(client: Any) -> Any:
    from secureconnect.app import KERNEL

    return client.app[KERNEL].state["push"]


async def _table(client: Any, name: str) -> list[dict[str, Any]]:
    from secureconnect.app import KERNEL
    from secureconnect_plugins.push import models

    table = getattr(models, name)
    async with client.app[KERNEL].db.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(select(table))]


async def _depth(client: Any, n: int) -> bool:
    return bool(await _service(client).outbox.depth() == n)


async def test_the_send_path_writes_one_content_free_event_per_message(
        sc_client: Any, fake: FakeProvider, rsa_pem: str) -> None:
    from .conftest import push_settings

    api = await sc_client(push_settings(fake, rsa_pem, deliver=False, preview="content"))
    team = await make_team(api, 3)
    for i, member in enumerate(team.members):
        await add_device(api, member, "webhook", f"{fake.url}/hook/{i}")
        await add_device(api, member, "webhook", f"{fake.url}/hook/{i}-b")
    secret = await send(api, team.owner, team.conversation_id, SECRET, is_encrypted=True)
    plain = await send(api, team.owner, team.conversation_id, "see you at noon")
    await wait_for(lambda: _depth(api, 2), message="two events")
    events = {json.loads(e["body"])["id"]: e for e in await _table(api, "pending")}
    assert set(events) == {secret["id"], plain["id"]}
    assert all(e["kind"] == "message" for e in events.values())
    assert SECRET not in events[secret["id"]]["body"]  # nothing to hide is stored
    assert "content" not in json.loads(events[secret["id"]]["body"])
    assert json.loads(events[plain["id"]]["body"])["content"] == "see you at noon"
    assert await _table(api, "outbox") == []  # recipients and devices: the worker's job

    worker = await sc_client(push_settings(fake, rsa_pem, deliver=True, preview="content"))
    await wait_for(lambda: len(fake.received) >= 12, message="2 messages x 6 devices")
    await wait_for(lambda: _depth(worker, 0), message="events and outbox drained")
    assert await _table(worker, "pending") == []
    assert len(fake.received) == 12
    assert all(SECRET.encode() not in r.body for r in fake.received)
    assert sum(b"see you at noon" in r.body for r in fake.received) == 6
    assert await metric(worker, "push_notifications_total", status="enqueued") == 12


async def test_an_event_claimed_by_a_worker_that_died_is_expanded_once_after_its_lease(
        sc_client: Any, fake: FakeProvider, rsa_pem: str) -> None:
    from secureconnect.app import KERNEL
    from secureconnect_plugins.push.outbox import Outbox

    from .conftest import push_settings

    api = await sc_client(push_settings(fake, rsa_pem, deliver=False))
    team = await make_team(api, 2)
    for i, member in enumerate(team.members):
        await add_device(api, member, "webhook", f"{fake.url}/hook/{i}")
    message = await send(api, team.owner, team.conversation_id)
    await wait_for(lambda: _depth(api, 1), message="one event")
    # a worker claims the event with a short lease, then "dies" before expanding it
    lease = 4.0
    dead = Outbox(api.app[KERNEL], lease=lease, ttl=0)
    token = dead.new_claim_token()
    claimed = await dead.claim_events(10, token)
    claimed_at = time.monotonic()
    assert [e["body"]["id"] for e in claimed] == [message["id"]]

    worker = await sc_client(push_settings(fake, rsa_pem, deliver=True))
    await asyncio.sleep(0.3)
    if time.monotonic() - claimed_at < lease - 0.5:  # (a slow start-up may pass it)
        assert fake.received == []  # still leased to the dead worker
    await wait_for(lambda: len(fake.received) >= 2, timeout=2 * lease,
                   message="expanded after the lease")
    await wait_for(lambda: _depth(worker, 0), message="drained")
    # the dead worker comes back and expands with its stale claim: nothing happens
    stale = [{"event_id": message["id"], "device_id": "x", "user_id": "y",
              "provider": "webhook", "payload": {}}]
    assert await dead.expand(token, [claimed[0]["id"]], stale) == []
    await asyncio.sleep(0.3)
    assert sorted(r.path for r in fake.received) == ["/hook/0", "/hook/1"]
    assert {r.json()["notification"]["message_id"] for r in fake.received} == {message["id"]}


async def test_chat_first_holds_delivery_back_during_sends_and_loses_nothing(
        push_client: Any, fake: FakeProvider) -> None:
    client = await push_client()
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "webhook", f"{fake.url}/hook/a")
    sent = [await send(client, team.owner, team.conversation_id, f"m{i}") for i in range(12)]
    await wait_for(lambda: len(fake.received) >= 12, message="every message pushed")
    await wait_for(lambda: _depth(client, 0), message="drained")
    await asyncio.sleep(0.2)
    assert sorted(r.json()["notification"]["message_id"] for r in fake.received) == sorted(
        m["id"] for m in sent)
    assert await metric(client, "push_yields_total") >= 1  # it did yield while sending


async def test_yield_backlog_zero_never_yields(push_client: Any, fake: FakeProvider) -> None:
    client = await push_client(yield_backlog=0)
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "webhook", f"{fake.url}/hook/a")
    for i in range(6):
        await send(client, team.owner, team.conversation_id, f"m{i}")
    await wait_for(lambda: len(fake.received) >= 6, message="every message pushed")
    assert await metric(client, "push_yields_total") == 0
