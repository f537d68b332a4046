"""The outbox's bounds (size, concurrent sends per provider) and a gateway's redirect,
against the fake provider over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

from secureconnect.testing.helpers import wait_for

from ..polls.helpers import make_team
from .fakes import FakeProvider
from .helpers import add_device, metric, send
from .test_delivery import _dead_letters


async def test_a_full_outbox_skips_new_notifications_and_counts_them(
        push_client: Any, fake: FakeProvider) -> None:
    await fake.stop()  # nothing leaves the outbox
    client = await push_client(max_outbox=2, backoff_base=30.0, backoff_max=30.0)
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "webhook", f"{fake.url}/hook/x")
    for i in (1, 2):
        await send(client, team.owner, team.conversation_id, f"m{i}")
        await wait_for(lambda i=i: _enqueued(client, i), message=f"notification {i} queued")
    await send(client, team.owner, team.conversation_id, "one too many")
    await wait_for(lambda: _outbox_full(client, 1), message="the third skipped")
    assert await _enqueued(client, 2)
    assert await metric(client, "push_outbox_depth") <= 2


async def _enqueued(client: Any, n: int) -> bool:
    return await metric(client, "push_notifications_total", status="enqueued") == n


async def _outbox_full(client: Any, n: int) -> bool:
    return await metric(client, "push_failed_total", provider="-", reason="outbox_full") == n


async def test_sends_per_provider_never_exceed_the_concurrency(push_client: Any,
                                                              fake: FakeProvider) -> None:
    client = await push_client(concurrency=2, send_timeout=10.0)
    team = await make_team(client, 4)
    for i, member in enumerate(team.members):
        await add_device(client, member, "webhook", f"{fake.url}/hook/{i}")
    fake.hang = True  # every call stays open
    await send(client, team.owner, team.conversation_id)
    await wait_for(lambda: len(fake.received) == 2, message="two sends in flight")
    await asyncio.sleep(0.5)
    assert len(fake.received) == 2  # the other two wait for a free slot


async def test_a_gateway_redirect_is_not_followed(push_client: Any, fake: FakeProvider) -> None:
    # a gateway answering 307 to another address (here: another path of the fake) must
    # not make the server call that address
    fake.script = lambda rec: ((307, {}, {"Location": f"{fake.url}/hook/elsewhere"})
                               if rec.path == "/hook/x" else None)
    client = await push_client()
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "webhook", f"{fake.url}/hook/x")
    await send(client, team.owner, team.conversation_id)
    await wait_for(lambda: _dead_letters(client, 1), message="a dead letter")
    await asyncio.sleep(0.3)
    assert [r.path for r in fake.received] == ["/hook/x"]
    assert await metric(client, "push_failed_total", provider="webhook",
                        reason="webhook_307") == 1


async def test_a_full_enqueue_queue_skips_messages_and_counts_them(
        push_client: Any, fake: FakeProvider) -> None:
    from secureconnect.app import KERNEL

    client = await push_client(enqueue_queue=1)
    team = await make_team(client, 1)
    await add_device(client, team.members[0], "webhook", f"{fake.url}/hook/x")
    message = await send(client, team.owner, team.conversation_id)
    await wait_for(lambda: len(fake.received) == 1, message="the first push")
    service = client.app[KERNEL].state["push"]
    for _ in range(5):  # one loop turn: the enqueuer cannot take any before the last
        service.message_sent(message)
    await wait_for(lambda: _backlog(client, 4), message="four skipped")
    await wait_for(lambda: len(fake.received) == 2, message="the one queued is pushed")
    await asyncio.sleep(0.3)
    assert len(fake.received) == 2


async def _backlog(client: Any, n: int) -> bool:
    return await metric(client, "push_failed_total", provider="-", reason="backlog") == n
