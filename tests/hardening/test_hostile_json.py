"""Hostile request bodies and headers over real HTTP: clear 4xx problems, never a 500
(issue 22, items 11-15)."""

from __future__ import annotations

import asyncio
import base64
import json

from secureconnect.testing.accounts import register_and_login

from .rawhttp import raw_request


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


async def _post_raw(client, path: str, body: bytes, headers=None):
    return await client.post(path, data=body,
                             headers={"Content-Type": "application/json", **(headers or {})})


async def test_deeply_nested_json_is_400_not_500(sc_client):
    client = await sc_client()
    body = b'{"email": "a@example.com", "password": ' + _nested(2000) + b"}"
    assert len(body) < 5000
    r = await _post_raw(client, "/v1/auth/login", body)
    assert r.status == 400, await r.text()
    assert (await r.json())["code"] == "json_too_deep"


async def test_json_depth_cap_is_the_setting(sc_client):
    client = await sc_client({"http": {"max_json_depth": 4}})
    ok = b'{"email": "a@example.com", "password": "x", "n": [[1]]}'
    r = await _post_raw(client, "/v1/auth/login", ok)
    # three levels pass the cap; the body then fails validation (unknown field)
    assert r.status == 422, await r.text()
    deep = b'{"email": "a@example.com", "password": "x", "n": [[[[1]]]]}'
    r = await _post_raw(client, "/v1/auth/login", deep)
    assert r.status == 400 and (await r.json())["code"] == "json_too_deep"


async def test_lone_surrogate_in_body_is_422(sc_client):
    client = await sc_client()
    for body in (
        b'{"email": "a@example.com", "password": "pw\\ud800pw"}',
        b'{"email": "a@example.com", "\\udfff": 1}',
        b'{"email": "a@example.com", "password": ["\\ud800"]}',
    ):
        r = await _post_raw(client, "/v1/auth/login", body)
        assert r.status == 422, (body, await r.text())
        assert (await r.json())["code"] == "invalid_unicode"
    # a valid pair (an emoji written as escapes) is fine: wrong password → 401
    r = await _post_raw(client, "/v1/auth/login",
                        b'{"email": "a@example.com", "password": "\\ud83d\\ude00x"}')
    assert r.status == 401, await r.text()


async def test_lone_surrogates_in_poll_and_message_bodies_are_422(sc_client):
    client = await sc_client()
    a = await register_and_login(client)
    b = await register_and_login(client)
    r = await client.post("/v1/conversations", headers=a.headers,
                          json={"type": "direct", "participant_ids": [b.user_id]})
    assert r.status in (200, 201), await r.text()
    cid = (await r.json())["id"]
    raw = (b'{"content": "hi \\ud800", "message_type": "text"}')
    r = await _post_raw(client, f"/v1/conversations/{cid}/messages", raw, a.headers)
    assert r.status == 422 and (await r.json())["code"] == "invalid_unicode"
    raw = (b'{"question": "q?", "options": ["a", "\\udc00"]}')
    r = await _post_raw(client, f"/v1/conversations/{cid}/polls", raw, a.headers)
    assert r.status == 422 and (await r.json())["code"] == "invalid_unicode"
    raw = (b'{"participant_ids": ["\\ud800"]}')
    r = await _post_raw(client, f"/v1/conversations/{cid}/participants", raw, a.headers)
    assert r.status == 422, await r.text()
    r = await client.get(f"/v1/conversations/{cid}/messages?before=%ED%A0%80",
                         headers=a.headers)
    assert r.status in (400, 422), await r.text()


async def test_non_ascii_bearer_token_is_401(sc_client):
    client = await sc_client()
    for raw in (b"Bearer \xff\xfe", b"Bearer \xc3\xa9t\xc3\xa9", b"Bearer a\x80b"):
        r = await raw_request(client, b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n"
                                      b"Authorization: " + raw)
        assert r.status == 401, r.body
        assert json.loads(r.body)["code"] == "invalid_token"


async def test_bad_history_cursors_are_400(sc_client):
    client = await sc_client()
    a = await register_and_login(client)
    b = await register_and_login(client)
    r = await client.post("/v1/conversations", headers=a.headers,
                          json={"type": "direct", "participant_ids": [b.user_id]})
    cid = (await r.json())["id"]
    for raw in ("s1:²".encode(), ("s1:" + "9" * 30).encode(), b"s1:-1", b"s1:"):
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = await client.get(f"/v1/conversations/{cid}/messages",
                             params={"before": cursor}, headers=a.headers)
        assert r.status == 400, (raw, await r.text())
        assert (await r.json())["code"] == "invalid_cursor"


async def test_failed_authentication_is_rate_limited_per_ip(sc_client):
    client = await sc_client({"rate_limits": {"classes": {"default": {
        "per_ip": "20/minute", "per_user": ""}}}})
    statuses = []
    for _ in range(25):
        r = await client.get("/v1/users/me", headers={"Authorization": "Bearer nope.nope.nope"})
        statuses.append(r.status)
    assert statuses[:20] == [401] * 20
    assert statuses[20:] == [429] * 5
    r = await raw_request(client, b"GET /v1/users/me HTTP/1.1\r\nHost: x\r\n"
                                  b"Authorization: Bearer \xff")
    assert r.status == 429 and "retry-after" in r.headers


async def test_concurrent_bad_tokens_never_500(sc_client):
    client = await sc_client()
    headers = [{"Authorization": h} for h in
               ("Bearer " + "a" * 5000, "Bearer a.b.c", "Bearer ..",
                "bearer", "Basic Zm9vOmJhcg==", "Bearer " + json.dumps({"alg": "none"}))]
    rs = await asyncio.gather(*(client.get("/v1/users/me", headers=h) for h in headers))
    assert sorted({r.status for r in rs}) == [401]


async def test_non_ascii_query_token_on_streams_is_401(sc_client):
    client = await sc_client()
    for path in (b"/v1/events", b"/v1/ws"):
        for token in (b"%C3%A9t%C3%A9", b"%ED%A0%80", b"%FF%FE"):
            r = await raw_request(client, b"GET " + path + b"?access_token=" + token
                                  + b" HTTP/1.1\r\nHost: x")
            assert r.status == 401, (path, token, r.body)
            assert json.loads(r.body)["code"] == "invalid_token"
