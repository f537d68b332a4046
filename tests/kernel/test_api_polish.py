"""API polish: every route answers only what /openapi.json documents (statuses and
schemas), one timestamp format everywhere, a missing Bearer scheme named as such,
WebSocket upgrade refusals documented."""

from __future__ import annotations

import re
import uuid
from typing import Any

import jsonschema

from secureconnect.http.context import ROUTES
from secureconnect.testing.accounts import login, register_and_login

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
STREAMS = {"/v1/ws", "/v1/events"}


def _check(spec: dict[str, Any], template: str, method: str, status: int, ctype: str,
           body: Any, what: str) -> None:
    responses = spec["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{what}: {status} is not documented ({sorted(responses)})"
    documented = responses[str(status)].get("content", {})
    if status >= 400:
        assert ctype == "application/problem+json", f"{what}: {status} is not a problem"
        assert "application/problem+json" in documented, what
        # a HEAD answer has the problem's headers but never a body
        assert method == "HEAD" or (isinstance(body, dict) and body.get("code")), what
        return
    if not documented or method == "HEAD":
        assert body is None, f"{what}: {status} has a body the docs do not describe"
        return
    assert ctype in documented, f"{what}: {ctype} is not the documented {sorted(documented)}"
    if ctype == "application/json":
        schema = documented[ctype]["schema"]
        jsonschema.validate(body, {**schema, "components": spec["components"]})


async def _call(client, method: str, path: str, **kw: Any) -> tuple[int, str, Any]:
    r = await client.request(method, path, **kw)
    text = await r.text()
    ctype = r.content_type
    body = await r.json(content_type=None) if text and "json" in ctype else None
    return r.status, ctype, body


async def test_every_route_answers_only_documented_statuses_and_schemas(sc_client):
    client = await sc_client()
    spec = await (await client.get("/openapi.json")).json()
    user = await register_and_login(client)
    routes = [r for r in client.app[ROUTES] if r.path not in STREAMS]
    # routes that end the session run last
    routes.sort(key=lambda r: "logout" in r.path)
    assert len(routes) > 20
    problems: list[str] = []
    for route in routes:
        template = re.sub(r"{([^}:]+)(?::[^}]*)?}", r"{\1}", route.path)
        path = re.sub(r"{[^}]+}", lambda _m: str(uuid.uuid4()), route.path)
        what = f"{route.method} {template}"
        calls: list[tuple[str, dict[str, Any]]] = []
        if route.auth:
            calls.append(("no token", {}))
        if route.body is not None:
            calls.append(("text body", {"data": "x", "headers": user.headers}))
        # a well-formed call with an empty object and unknown ids
        calls.append(("{}", {"headers": user.headers,
                             **({"json": {}} if route.body is not None else {})}))
        for label, kw in calls:
            status, ctype, body = await _call(client, route.method, path, **kw)
            try:
                _check(spec, template, route.method, status, ctype, body, f"{what} ({label})")
                assert label != "no token" or status == 401, f"{what}: {status} without a token"
            except (AssertionError, jsonschema.ValidationError) as exc:
                problems.append(str(exc).splitlines()[0])
    assert not problems, "\n".join(problems)


async def test_documented_success_schemas_match_real_answers(sc_client):
    """The success path of the main routes, validated against the documented schema."""
    client = await sc_client()
    spec = await (await client.get("/openapi.json")).json()
    alice, bob = await register_and_login(client), await register_and_login(client)

    async def call(method: str, template: str, path: str, user: Any, **kw: Any) -> Any:
        status, ctype, body = await _call(client, method, path, headers=user.headers, **kw)
        assert status < 300, (method, path, status, body)
        _check(spec, template, method, status, ctype, body, f"{method} {template}")
        return body

    await call("GET", "/v1/users/me", "/v1/users/me", alice)
    await call("GET", "/v1/users/{user_id}", f"/v1/users/{bob.user_id}", alice)
    await call("PATCH", "/v1/users/me", "/v1/users/me", alice, json={"display_name": "Al"})
    conv = await call("POST", "/v1/conversations", "/v1/conversations", alice,
                      json={"type": "direct", "participant_ids": [bob.user_id]})
    # the second direct conversation answers 200 with the same schema
    again = await call("POST", "/v1/conversations", "/v1/conversations", alice,
                       json={"type": "direct", "participant_ids": [bob.user_id]})
    assert again["id"] == conv["id"]
    cid = conv["id"]
    await call("GET", "/v1/conversations", "/v1/conversations", alice)
    await call("POST", "/v1/conversations/{conversation_id}/messages",
               f"/v1/conversations/{cid}/messages", alice,
               json={"content": "hi", "message_type": "text"})
    await call("GET", "/v1/conversations/{conversation_id}/messages",
               f"/v1/conversations/{cid}/messages", bob)
    await call("GET", "/v1/users", "/v1/users?q=a", alice)
    # video: a call and the ICE servers
    call_out = await call("POST", "/v1/conversations/{conversation_id}/calls",
                          f"/v1/conversations/{cid}/calls", alice, json={"type": "audio"})
    await call("GET", "/v1/calls/{call_id}", f"/v1/calls/{call_out['id']}", bob)
    await call("GET", "/v1/conversations/{conversation_id}/calls/active",
               f"/v1/conversations/{cid}/calls/active", bob)
    await call("GET", "/v1/calls/ice-servers", "/v1/calls/ice-servers", alice)
    # drive: a reservation, the files list and the quota
    reserved = await call("POST", "/v1/drive/files", "/v1/drive/files", alice,
                          json={"name": "a.txt", "size": 3, "content_type": "text/plain"})
    await call("GET", "/v1/drive/files", "/v1/drive/files", alice)
    await call("GET", "/v1/drive/files/{file_id}",
               f"/v1/drive/files/{reserved['file']['id']}", alice)
    await call("GET", "/v1/drive/quota", "/v1/drive/quota", alice)


def _timestamps(value: Any, key: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _timestamps(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in _timestamps(v, key)]
    if isinstance(value, str) and (key.endswith("_at") or key in ("ts", "expires")):
        return [(key, value)]
    return []


async def test_one_timestamp_format_everywhere(sc_client, sc_ws):
    client = await sc_client()
    alice, bob = await register_and_login(client), await register_and_login(client)
    seen: list[tuple[str, str]] = []

    async def grab(method: str, path: str, user: Any, **kw: Any) -> Any:
        r = await client.request(method, path, headers=user.headers, **kw)
        assert r.status < 300, await r.text()
        body = await r.json()
        seen.extend(_timestamps(body))
        return body

    await grab("GET", "/v1/users/me", alice)
    conv = await grab("POST", "/v1/conversations", alice,
                      json={"type": "group", "participant_ids": [bob.user_id], "name": "g"})
    cid = conv["id"]
    ws = await sc_ws(client, bob.access_token)
    msg = await grab("POST", f"/v1/conversations/{cid}/messages", alice,
                     json={"content": "hi", "message_type": "text"})
    await grab("PATCH", f"/v1/conversations/{cid}/messages/{msg['id']}", alice,
               json={"content": "hello"})
    await grab("GET", f"/v1/conversations/{cid}/messages", bob)
    await grab("GET", "/v1/conversations", bob)
    await grab("POST", f"/v1/conversations/{cid}/polls", alice,
               json={"question": "when?", "options": ["now", "later"]})
    event = await ws.expect(lambda e: e.get("type") == "chat.message")
    seen.extend(_timestamps(event))
    await ws.close()
    keys = {k for k, _ in seen}
    assert {"created_at", "edited_at"} <= keys, keys
    bad = [(k, v) for k, v in seen if not RFC3339_Z.match(v)]
    assert not bad, bad


async def test_missing_bearer_scheme_has_its_own_message(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    r = await client.get("/v1/users/me", headers={"Authorization": user.access_token})
    body = await r.json()
    assert r.status == 401 and body["code"] == "invalid_auth_scheme"
    assert "Bearer" in body["detail"] and user.access_token not in body["detail"]
    r = await client.get("/v1/users/me")
    assert (await r.json())["code"] == "missing_token"
    r = await client.get("/v1/users/me", headers={"Authorization": "Bearer "})
    assert (await r.json())["code"] == "missing_token"
    # the documented fix works
    tokens = await login(client, user.email)
    r = await client.get("/v1/users/me",
                         headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status == 200


async def test_websocket_upgrade_refusals_are_documented_and_real(sc_client):
    client = await sc_client()
    spec = await (await client.get("/openapi.json")).json()
    ws_doc = spec["paths"]["/v1/ws"]["get"]["responses"]
    assert {"101", "400", "401", "403", "429", "503"} <= set(ws_doc)
    assert {"401", "403", "429", "503"} <= set(spec["paths"]["/v1/events"]["get"]["responses"])
    r = await client.get("/v1/ws")  # no token
    assert r.status == 401 and "401" in ws_doc
    r = await client.get("/v1/ws", headers={"Origin": "https://evil.example"})
    assert str(r.status) in ws_doc


async def test_server_header_names_no_version(sc_client):
    client = await sc_client()
    user = await register_and_login(client)
    answers = [await client.get("/health/live"), await client.get("/v1/no-such-route"),
               await client.get("/v1/users/me"), await client.get("/openapi.json")]
    for r in answers:
        assert r.headers.getall("Server") == ["SecureConnect"], (r.url, r.headers)
    ws = await client.ws_connect("/v1/ws", headers=user.headers)
    try:
        assert ws._response.headers.getall("Server") == ["SecureConnect"]
    finally:
        await ws.close()
