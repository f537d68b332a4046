"""One access-log line per request: route template, status, duration, request id, user
id; never the query string or a token; switchable; the same fields as JSON."""

from __future__ import annotations

import json
import logging

from secureconnect.logs import JsonFormatter, RequestIdFilter
from secureconnect.testing.accounts import register_and_login

ACCESS = "secureconnect.access"


def _lines(caplog):
    return [r for r in caplog.records if r.name == ACCESS]


async def test_one_line_per_request_without_secrets(sc_client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    client = await sc_client({"logging": {"access_log": True}})
    user = await register_and_login(client)
    caplog.clear()
    r = await client.get(f"/v1/users/{user.user_id}?access_token=hunter2secret",
                         headers={**user.headers, "X-Request-ID": "req-42"})
    assert r.status == 200
    [line] = _lines(caplog)
    assert (line.method, line.path, line.status) == ("GET", "/v1/users/{user_id}", 200)
    assert line.user_id == user.user_id and line.duration_ms >= 0
    # the request id is the one the client sent, also after the filter ran
    RequestIdFilter().filter(line)
    assert line.request_id == "req-42"
    text = line.getMessage() + json.dumps(vars(line), default=str)
    assert "hunter2secret" not in text and user.access_token not in text
    assert user.user_id in line.getMessage()
    # JSON: the fields are keys of their own
    data = json.loads(JsonFormatter().format(line))
    assert data["path"] == "/v1/users/{user_id}" and data["status"] == 200
    assert data["request_id"] == "req-42" and data["ts"].endswith("Z")
    # failures and unknown paths are logged too (anonymous: user "-")
    caplog.clear()
    await client.get("/no/such/path?password=x")
    await client.get("/v1/users/me")
    assert [(x.path, x.status, x.user_id) for x in _lines(caplog)] == [
        ("unmatched", 404, "-"), ("/v1/users/me", 401, "-")]


async def test_access_log_can_be_switched_off(sc_client, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    client = await sc_client({"logging": {"access_log": False}})
    assert (await client.get("/health/live")).status == 200
    assert _lines(caplog) == []
