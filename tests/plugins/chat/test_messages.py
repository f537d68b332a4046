"""Messages over REST: send, validation, limits, idempotency, history, edit, delete,
receipts, guards (sc_message_will_be_sent / sc_message_sent)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from secureconnect import Veto, hookimpl

from .helpers import all_messages, create_group, history, send, users


async def metric(client, name, labels=None) -> float:
    from secureconnect.app import KERNEL

    return client.app[KERNEL].metrics.value(name, labels)


async def test_member_sends_and_non_member_is_refused(chat_client):
    client = await chat_client()
    a, b, outsider = await users(client, 3)
    cid = await create_group(client, a, [b])
    msg = await send(client, a, cid, "hello")
    assert msg["seq"] == 1 and msg["sender_id"] == a.user_id and msg["content"] == "hello"
    before = await metric(client, "chat_message_send_unauthorized_total")
    for target in (cid, str(uuid.uuid4())):
        r = await client.post(
            f"/v1/conversations/{target}/messages",
            json={"content": "let me in"},
            headers=outsider.headers,
        )
        assert r.status == 403
        assert (await r.json())["code"] == "not_a_participant"
    assert await metric(client, "chat_message_send_unauthorized_total") == before + 2
    # nothing of the outsider was stored; they cannot read history either
    assert [m["content"] for m in await all_messages(client, b, cid)] == ["hello"]
    r = await client.get(f"/v1/conversations/{cid}/messages", headers=outsider.headers)
    assert r.status == 403
    assert (
        await metric(
            client, "chat_message_created_total", {"message_type": "text", "is_encrypted": "false"}
        )
        == 1
    )
    assert await metric(client, "chat_message_persisted_total", {"status": "success"}) == 1


async def test_validation_and_size_limits(chat_client):
    client = await chat_client(
        {"chat": {"max_content_bytes": {"image": 100}, "max_metadata_bytes": 64}}
    )
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    r = await send(client, a, cid, "x" * 10240)  # exactly the text limit
    assert r["seq"] == 1
    r = await send(client, a, cid, "é" * 5121, status=413)  # 10242 bytes
    assert r["code"] == "message_too_large"
    r = await send(client, a, cid, "y" * 101, status=413, message_type="image")
    r = await send(client, a, cid, "ok", status=413, metadata={"k": "v" * 100})
    assert r["code"] == "metadata_too_large"
    for bad_type in ("poll", "system", "sticker"):
        r = await send(client, a, cid, "x", status=422, message_type=bad_type)
        assert r["code"] == "invalid_message_type"
    r = await client.post(
        f"/v1/conversations/{cid}/messages", json={"message_type": "text"}, headers=a.headers
    )
    assert r.status == 422
    # nothing half-written: seq continues gap-free
    assert (await send(client, a, cid, "next"))["seq"] == 2


async def test_encrypted_content_is_opaque_and_file_messages_keep_the_file_id(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    blob = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    file_id = str(uuid.uuid4())
    m = await send(
        client,
        a,
        cid,
        blob,
        is_encrypted=True,
        message_type="file",
        file_id=file_id,
        metadata={"name_ct": "zz"},
    )
    assert m["is_encrypted"] is True and m["content"] == blob and m["file_id"] == file_id
    got = (await history(client, b, cid))["messages"][0]
    assert got["content"] == blob and got["metadata"] == {"name_ct": "zz"}


async def test_idempotency_key_returns_the_original_also_concurrently(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    first = await send(client, a, cid, "once", headers={"Idempotency-Key": "k-1"})
    again = await send(client, a, cid, "once", status=200, headers={"Idempotency-Key": "k-1"})
    assert again == first
    rs = await asyncio.gather(
        *(
            client.post(
                f"/v1/conversations/{cid}/messages",
                json={"content": "burst"},
                headers={**a.headers, "Idempotency-Key": "k-2"},
            )
            for _ in range(10)
        )
    )
    statuses = sorted(r.status for r in rs)
    assert statuses == [200] * 9 + [201], statuses
    bodies = [await r.json() for r in rs]
    assert len({(m["id"], m["seq"]) for m in bodies}) == 1
    # the same key from another sender is another message
    other = await send(client, b, cid, "mine", headers={"Idempotency-Key": "k-2"})
    assert other["id"] != bodies[0]["id"]
    stored = await all_messages(client, a, cid)
    assert [m["seq"] for m in stored] == [3, 2, 1]
    assert await metric(client, "chat_message_idempotency_hit_total") == 10
    r = await client.post(
        f"/v1/conversations/{cid}/messages",
        json={"content": "x"},
        headers={**a.headers, "Idempotency-Key": "k" * 201},
    )
    assert r.status == 400 and (await r.json())["code"] == "invalid_idempotency_key"



async def test_a_retry_in_a_batch_of_fresh_sends_consumes_no_seq(chat_client):
    """A retried key arriving with fresh keyed, unkeyed and duplicate-key sends (one
    group commit, or a few): the retry gets the stored message back, the others are
    stored once each, and the seqs stay gap-free — the batch that claimed its keys
    optimistically and found one taken was rolled back whole and run again."""
    client = await chat_client({"rate_limits": {"enabled": False}})
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    first = await send(client, a, cid, "first", headers={"Idempotency-Key": "old"})

    async def post(user, content, key=None):
        headers = dict(user.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        r = await client.post(f"/v1/conversations/{cid}/messages",
                              json={"content": content}, headers=headers)
        assert r.status in (200, 201), await r.text()
        return r.status, await r.json()

    for round_ in range(3):
        results = await asyncio.gather(
            post(a, "first", key="old"),
            *(post(u, f"fresh {round_} {i}", key=f"fresh-{round_}-{i}")
              for i in range(5) for u in (a, b)),
            *(post(b, f"plain {round_} {i}") for i in range(4)),
            *(post(a, "dup", key=f"dup-{round_}") for _ in range(3)),
        )
        retry, fresh, plain, dups = results[0], results[1:11], results[11:15], results[15:]
        assert retry == (200, first)
        assert [s for s, _ in fresh + plain] == [201] * 14
        assert sorted(s for s, _ in dups) == [200, 200, 201]
        assert len({m["id"] for _, m in dups}) == 1
    stored = await all_messages(client, a, cid)
    assert sorted(m["seq"] for m in stored) == list(range(1, 2 + 3 * 15))
    assert len({m["id"] for m in stored}) == len(stored)

async def test_history_pages_with_an_opaque_cursor(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    for i in range(7):
        await send(client, a, cid, f"m{i}")
    page1 = await history(client, b, cid, limit=3)
    assert [m["content"] for m in page1["messages"]] == ["m6", "m5", "m4"]
    page2 = await history(client, b, cid, limit=3, before=page1["next_cursor"])
    assert [m["content"] for m in page2["messages"]] == ["m3", "m2", "m1"]
    page3 = await history(client, b, cid, limit=3, before=page2["next_cursor"])
    assert [m["content"] for m in page3["messages"]] == ["m0"]
    assert page3["next_cursor"] is None
    r = await client.get(
        f"/v1/conversations/{cid}/messages", params={"before": "nonsense"}, headers=b.headers
    )
    assert r.status == 400 and (await r.json())["code"] == "invalid_cursor"


async def test_edit_and_delete_by_the_sender_only(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    m = await send(client, a, cid, "typo")
    url = f"/v1/conversations/{cid}/messages/{m['id']}"
    r = await client.patch(url, json={"content": "fixed"}, headers=b.headers)
    assert r.status == 403 and (await r.json())["code"] == "not_the_sender"
    r = await client.patch(url, json={"content": "fixed"}, headers=a.headers)
    assert r.status == 200
    edited = await r.json()
    assert edited["content"] == "fixed" and edited["edited_at"] and edited["seq"] == 1
    r = await client.delete(url, headers=b.headers)
    assert r.status == 403
    r = await client.delete(url, headers=a.headers)
    assert r.status == 200
    tomb = (await history(client, b, cid))["messages"][0]
    assert tomb["id"] == m["id"] and tomb["deleted"] is True and tomb["content"] is None
    r = await client.patch(url, json={"content": "again"}, headers=a.headers)
    assert r.status == 409
    r = await client.delete(f"/v1/conversations/{cid}/messages/{uuid.uuid4()}", headers=a.headers)
    assert r.status == 404


async def test_rate_limit_on_send(chat_client):
    client = await chat_client(
        {"rate_limits": {"classes": {"chat_send": {"per_ip": "", "per_user": "3/minute"}}}}
    )
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    for _ in range(3):
        await send(client, a, cid)
    r = await client.post(
        f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=a.headers
    )
    assert r.status == 429 and "Retry-After" in r.headers


class Guard:
    """A moderation plugin: vetoes 'forbidden', rewrites 'darn', crashes on 'boom'."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    @hookimpl
    def sc_message_will_be_sent(self, message):
        if "forbidden" in message["content"]:
            return Veto("that word is not allowed here", code="content_blocked", status=422)
        if message["content"] == "boom":
            raise RuntimeError("guard crashed")
        if "darn" in message["content"]:
            return {"content": message["content"].replace("darn", "d**n")}
        return None

    @hookimpl
    async def sc_message_sent(self, message):
        self.sent.append(message)
        if message["content"] == "observer fails":
            raise RuntimeError("observer crashed")


async def test_guards_veto_rewrite_and_fail_closed(chat_client):
    guard = Guard()
    client = await chat_client(plugins=[guard])
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    r = await send(client, a, cid, "a forbidden word", status=422)
    assert r["code"] == "content_blocked" and "not allowed" in r["detail"]
    r = await send(client, a, cid, "boom", status=503)
    assert r["code"] == "message_rejected"
    m = await send(client, a, cid, "darn it")
    assert m["content"] == "d**n it" and m["seq"] == 1
    m2 = await send(client, a, cid, "observer fails")
    assert m2["seq"] == 2
    from secureconnect.testing import wait_for

    await wait_for(lambda: len(guard.sent) == 2, message="sc_message_sent calls")
    assert [x["content"] for x in guard.sent] == ["d**n it", "observer fails"]
    from secureconnect.app import KERNEL

    rendered = client.app[KERNEL].metrics.render().decode()
    assert 'plugin_hook_errors_total{hook="sc_message_sent"' in rendered
    stored = await all_messages(client, b, cid)
    assert [x["content"] for x in stored] == ["observer fails", "d**n it"]


async def test_read_receipt_needs_a_message_of_the_conversation(chat_client):
    client = await chat_client()
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    m = await send(client, a, cid)
    r = await client.post(
        f"/v1/conversations/{cid}/read", json={"message_id": "nope"}, headers=b.headers
    )
    assert r.status == 404
    r = await client.post(
        f"/v1/conversations/{cid}/read", json={"message_id": m["id"]}, headers=b.headers
    )
    body = await r.json()
    assert body["seq"] == 1 and body["unread_count"] == 0


class ClosingGuard:
    """Lets messages through until ``closed``, then refuses every one."""

    def __init__(self) -> None:
        self.closed = False
        self.calls = 0

    @hookimpl
    def sc_message_will_be_sent(self, message):
        self.calls += 1
        if self.closed:
            return Veto("sending is closed", code="sending_closed", status=403)
        return None


async def test_a_keyed_retry_gets_its_message_even_when_the_guard_now_refuses(chat_client):
    """The key is claimed in the group commit, so a retry passes the guards again; a
    send whose answer was lost still gets its stored message back when they refuse."""
    guard = ClosingGuard()
    client = await chat_client(plugins=[guard])
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    first = await send(client, a, cid, "once", headers={"Idempotency-Key": "lost-answer"})
    again = await send(client, a, cid, "once", status=200,
                       headers={"Idempotency-Key": "lost-answer"})
    assert again == first and guard.calls == 2
    guard.closed = True
    retry = await send(client, a, cid, "once", status=200,
                       headers={"Idempotency-Key": "lost-answer"})
    assert retry == first
    refused = await send(client, a, cid, "new", status=403,
                         headers={"Idempotency-Key": "never-stored"})
    assert refused["code"] == "sending_closed"
    assert [m["seq"] for m in await all_messages(client, a, cid)] == [1]


# the SQL store's row path only (Cassandra builds its pages from message objects)
@pytest.mark.parametrize(
    "message_store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True)
async def test_history_pages_built_from_rows_equal_the_message_objects(chat_client):
    """The SQL store builds history pages straight from its rows (``page_dicts``): the
    same messages, fields and cursors as ``page`` + ``as_dict`` — metadata, encryption,
    edits, tombstones, a timestamp on a whole second — page by page."""
    from datetime import UTC, datetime

    from secureconnect.app import KERNEL
    from secureconnect_plugins.chat.routes import STATE_KEY
    from secureconnect_plugins.chat.store import NewMessage

    client = await chat_client({"rate_limits": {"enabled": False}})
    a, b = await users(client, 2)
    cid = await create_group(client, a, [b])
    store = client.app[KERNEL].state[STATE_KEY].messages.store
    for i in range(7):
        await send(client, a if i % 2 else b, cid, f"m{i}",
                   metadata={"n": i, "nested": {"x": [1, "é"]}} if i % 3 == 0 else None)
    await send(client, a, cid, "c2VjcmV0", is_encrypted=True)
    edited = await send(client, a, cid, "to edit")
    r = await client.patch(f"/v1/conversations/{cid}/messages/{edited['id']}",
                           json={"content": "edited"}, headers=a.headers)
    assert r.status == 200, await r.text()
    gone = await send(client, b, cid, "to delete")
    r = await client.delete(f"/v1/conversations/{cid}/messages/{gone['id']}", headers=b.headers)
    assert r.status == 200, await r.text()
    whole_second = datetime(2026, 12, 7, 8, 30, 15, tzinfo=UTC)
    await store.append(NewMessage(id="whole-second", conversation_id=cid, sender_id=a.user_id,
                                  message_type="text", content="on the second",
                                  is_encrypted=False, metadata=None, file_id=None,
                                  created_at=whole_second))
    page_dicts = store.page_dicts
    cursor = None
    seen = 0
    while True:
        old = await store.page(cid, before=cursor, limit=3)
        new, next_cursor = await page_dicts(cid, before=cursor, limit=3)
        assert new == [m.as_dict() for m in old.messages]
        assert next_cursor == old.next_cursor
        seen += len(new)
        if next_cursor is None:
            break
        cursor = next_cursor
    assert seen == 11
    page = (await history(client, a, cid, limit=50))["messages"]
    assert page[0]["created_at"] == "2026-12-07T08:30:15Z"
    assert [m["deleted"] for m in page[:2]] == [False, True]
