"""Bounds of the AI plugin: the per-instance concurrency limit, the daily quota under
concurrency, bad input, a missing model package, retention (the prune job) and cleanup
when a conversation or an account is deleted."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from secureconnect.app import KERNEL
from secureconnect.testing import wait_for
from secureconnect_plugins.ai.models import ai_audit, ai_usage, utcnow

from .helpers import SQLITE_FILE, make_room, metric, opt_in, post, send
from .test_openai import openai_settings


async def _slot_held(ai_client, fake_openai, **settings):
    """An instance whose AI slot is held: a smart-reply request hangs at the fake
    provider (already called once). Returns ``(client, room, bob, that request's task)``."""
    client = await ai_client(openai_settings(fake_openai, **settings))
    room = await make_room(client, 1)
    bob = room.members[0]
    await send(room, room.owner, "Ready for the demo?")
    await opt_in(client, bob)
    fake_openai.mode = "hang"
    first = asyncio.create_task(post(room, bob, "smart-replies"))
    await wait_for(lambda: fake_openai.calls == 1, message="the first call to reach the provider")
    return client, room, bob, first


async def test_concurrency_limit_answers_503_ai_busy(ai_client, fake_openai):
    _client, room, bob, first = await _slot_held(
        ai_client, fake_openai, max_concurrent=1, queue_timeout=0.2,
        openai_total_timeout=2.0, openai_read_timeout=5.0)
    r = await post(room, bob, "summary")
    assert r.status == 503 and (await r.json())["code"] == "ai_busy"
    assert r.headers["Retry-After"] == "1"
    assert fake_openai.calls == 1  # refused before any provider work
    assert (await first).status == 504
    # the slot is free again
    fake_openai.mode = "ok"
    assert (await post(room, bob, "smart-replies")).status == 200


async def test_a_full_queue_is_refused_at_once_with_503_ai_busy(ai_client, fake_openai):
    client, room, bob, first = await _slot_held(
        ai_client, fake_openai, max_concurrent=1, max_queued=1, queue_timeout=30.0,
        openai_total_timeout=3.0, openai_read_timeout=10.0)  # `first` holds the one slot
    second = asyncio.create_task(post(room, bob, "summary"))  # waits for the slot

    async def queued() -> float:
        return await metric(client, "ai_queued_requests")

    await wait_for(queued, message="the second request to wait in the queue")
    started = time.monotonic()
    r = await post(room, bob, "summary")  # the queue is full: no wait of queue_timeout
    assert time.monotonic() - started < 5.0
    assert r.status == 503 and r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == "ai_busy" and "already wait" in body["detail"]
    assert r.headers["Retry-After"] == "1"
    assert fake_openai.calls == 1  # refused before any provider work
    assert await metric(
        client, 'ai_requests_total{feature="summary",provider="openai",status="busy"}') == 1
    fake_openai.mode = "ok"
    assert (await first).status == 504  # the provider stayed silent
    r = await second  # then the queued request had its turn
    assert r.status == 200, await r.text()
    assert await queued() == 0


async def test_requests_refused_before_any_provider_call_do_not_count_against_the_quota(
        ai_client, fake_openai):
    # the quota is taken before a slot: three requests in flight at once fit in it
    client, room, bob, first = await _slot_held(
        ai_client, fake_openai, daily_requests=3, max_concurrent=1, max_queued=1,
        queue_timeout=0.3, openai_total_timeout=6.0, openai_read_timeout=10.0)
    # one waits for the slot past queue_timeout, one more is refused at once (queue
    # full), then another waits and times out: three 503 ai_busy, no provider call
    waited = asyncio.create_task(post(room, bob, "summary"))
    await wait_for(lambda: metric(client, "ai_queued_requests"),
                   message="a request waiting for the slot")
    at_once = await post(room, bob, "summary")
    refused = [at_once, await waited, await post(room, bob, "smart-replies")]
    for r in refused:
        assert r.status == 503 and (await r.json())["code"] == "ai_busy"
    assert fake_openai.calls == 1
    assert (await first).status == 504  # it reached the provider: it counts
    store = client.server.app[KERNEL].state["ai"].store
    assert (await store.usage(bob.user_id, utcnow().date()))[0] == 1
    fake_openai.mode = "ok"
    # the refusals gave their requests back: two more of three run (four were
    # counted without that) ...
    for _ in range(2):
        r = await post(room, bob, "smart-replies")
        assert r.status == 200, await r.text()
    # ... and the count is exact: the next is over the quota
    r = await post(room, bob, "smart-replies")
    assert r.status == 429 and (await r.json())["code"] == "quota_exceeded"
    assert (await store.usage(bob.user_id, utcnow().date()))[0] == 3


async def test_deleted_conversation_loses_its_policy(ai_client):
    client = await ai_client()
    room = await make_room(client, 1)
    owner, bob = room.owner, room.members[0]
    r = await client.put(room.url("policy"), json={"summary": False}, headers=owner.headers)
    assert r.status == 200
    store = client.server.app[KERNEL].state["ai"].store
    assert (await store.policy(room.conversation_id)).summary is False
    for user in (bob, owner):  # everyone leaves: chat deletes the conversation
        r = await client.delete(
            f"/v1/conversations/{room.conversation_id}/participants/{user.user_id}",
            headers=user.headers)
        assert r.status == 204

    async def forgotten() -> bool:
        return (await store.policy(room.conversation_id)).updated_by is None

    await wait_for(forgotten, message="the policy row removed")


@pytest.mark.parametrize("executor", ["process", "thread"])
async def test_without_the_model_package_ai_answers_503_naming_the_fix(ai_client, monkeypatch,
                                                                       executor):
    # the `ai` extra not installed: importing wordllama fails
    monkeypatch.setitem(sys.modules, "wordllama", None)
    client = await ai_client({"ai": {"local_executor": executor}})
    room = await make_room(client, 1)
    bob = room.members[0]
    await send(room, room.owner, "anyone there?")
    await opt_in(client, bob)
    r = await post(room, bob, "summary")
    assert r.status == 503
    body = await r.json()
    assert body["code"] == "ai_unavailable" and "secureconnect[ai]" in body["detail"]
    # chat itself is untouched
    await send(room, bob, "still here")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return SQLITE_FILE
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_concurrent_requests_never_overshoot_the_daily_quota(ai_client, database_url):
    client = await ai_client({"database": {"url": database_url},
                              "ai": {"daily_requests": 5, "max_concurrent": 8}})
    room = await make_room(client, 1)
    bob = room.members[0]
    await send(room, room.owner, "Shall we ship it today?")
    await opt_in(client, bob)
    answers = await asyncio.gather(*(post(room, bob, "smart-replies") for _ in range(12)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [200] * 5 + [429] * 7
    store = client.server.app[KERNEL].state["ai"].store
    rows = await store.audit_rows(bob.user_id)
    assert len(rows) == 5 and all(row["status"] == "ok" for row in rows)


async def test_bad_input_is_a_4xx_problem_never_a_500(ai_client):
    client = await ai_client()
    room = await make_room(client, 1)
    bob = room.members[0]
    await send(room, room.owner, "hello")
    await opt_in(client, bob)
    headers = {**bob.headers, "Content-Type": "application/json"}
    cases = [
        ("summary", b"{not json", 400), ("summary", b"[1, 2]", 400),
        ("summary", b'{"since_seq": -1}', 422), ("summary", b'{"limit": 0}', 422),
        ("summary", b'{"limit": "10"}', 422), ("summary", b'{"since_seq": 1.5}', 422),
        ("summary", b'{"unknown": 1}', 422), ("smart-replies", b'{"count": 0}', 422),
        ("smart-replies", b'{"count": true}', 422), ("smart-replies", b"null", 400),
    ]
    for what, raw, status in cases:
        r = await client.post(room.url(what), data=raw, headers=headers)
        assert r.status == status, (what, raw, await r.text())
        assert r.content_type == "application/problem+json"
        assert (await r.json())["code"]
    for raw in (b'{"summary": "no"}', b'{"other": true}', b"[]"):
        r = await client.put(room.url("policy"), data=raw, headers={
            **room.owner.headers, "Content-Type": "application/json"})
        assert 400 <= r.status < 500 and r.content_type == "application/problem+json"
    r = await client.put("/v1/ai/settings", json={"features": {"translate": True}},
                         headers=bob.headers)
    assert r.status == 422
    r = await client.get("/v1/ai/conversations/not-a-uuid/policy", headers=bob.headers)
    assert r.status == 404 and (await r.json())["code"] == "conversation_not_found"
    r = await client.post(room.url("summary"), json={})
    assert r.status == 401
    # a window past the end reads nothing and says so (no model work)
    r = await client.post(room.url("summary"), json={"since_seq": 2**70, "limit": 2**70},
                          headers=bob.headers)
    assert r.status == 200, await r.text()
    out = await r.json()
    assert out["messages_read"] == 0 and out["summary"] == "" and out["chunks"] == 0
    assert out["covered"] == {"from_seq": None, "to_seq": None, "since_seq": 2**70,
                              "complete": True}


async def test_prune_job_and_a_deleted_account(ai_client):
    client = await ai_client()
    room = await make_room(client, 1)
    bob = room.members[0]
    await send(room, room.owner, "Shall we ship it today?")
    await opt_in(client, bob)
    for _ in range(2):
        assert (await post(room, bob, "smart-replies")).status == 200
    kernel = client.server.app[KERNEL]
    store = kernel.state["ai"].store
    assert len(await store.audit_rows(bob.user_id)) == 2
    assert await kernel.jobs.run("ai.prune") == 0  # nothing old yet
    # age one audit row and the usage counter past the 90-day retention
    old = utcnow() - timedelta(days=91)
    first = (await store.audit_rows(bob.user_id))[0]["id"]
    async with kernel.db.session() as s:
        await s.execute(update(ai_audit).where(ai_audit.c.id == first).values(created_at=old))
        await s.execute(update(ai_usage).values(day=(old - timedelta(days=3)).date().isoformat()))
    assert await kernel.jobs.run("ai.prune") == 1
    rows = await store.audit_rows(bob.user_id)
    assert len(rows) == 1 and rows[0]["id"] != first
    assert await store.usage(bob.user_id, old.date() - timedelta(days=3)) == (0, 0)
    # a deleted account loses its AI settings and counters (audit rows age out)
    await kernel.notify("sc_user_deleted", user={"id": bob.user_id})
    assert (await store.user_settings(bob.user_id)).enabled is False


async def test_openapi_documents_every_ai_route_with_the_policy(ai_client):
    # the policy routes are not in ../shared/API.md: the served document lists them
    client = await ai_client()
    r = await client.get("/openapi.json")
    assert r.status == 200
    paths = (await r.json())["paths"]
    assert set(paths["/v1/ai/conversations/{conversation_id}/policy"]) >= {"get", "put"}
    for what in ("summary", "smart-replies"):
        assert "post" in paths[f"/v1/ai/conversations/{{conversation_id}}/{what}"]
    assert set(paths["/v1/ai/settings"]) >= {"get", "put"}
