"""Switching polls off (and chat off under it)."""

from __future__ import annotations

import pytest

from secureconnect import ConfigError
from secureconnect.plugins import switches_without

from .helpers import make_team

POLL_ROUTES = [
    ("POST", "/v1/conversations/{cid}/polls"),
    ("GET", "/v1/polls/{pid}"),
    ("POST", "/v1/polls/{pid}/votes"),
    ("DELETE", "/v1/polls/{pid}/votes"),
    ("POST", "/v1/polls/{pid}/close"),
]
SOME_POLL = "00000000-0000-7000-8000-000000000000"


@pytest.mark.parametrize(
    "overrides",
    [{"plugins": {"polls": False}}, {"polls": {"enabled": False}}],
    ids=["plugins.polls=false", "polls.enabled=false"],
)
async def test_disabled_polls_has_no_routes_and_chat_keeps_working(polls_client, overrides):
    client = await polls_client(overrides)
    team = await make_team(client, 1)
    for method, path in POLL_ROUTES:
        url = path.format(cid=team.conversation_id, pid=SOME_POLL)
        r = await client.request(
            method,
            url,
            json={"question": "q", "options": ["a", "b"], "option_ids": ["x"]},
            headers=team.owner.headers,
        )
        assert r.status in (404, 405), (method, url, r.status)
    spec = await (await client.get("/openapi.json")).json()
    assert not [p for p in spec["paths"] if "polls" in p]
    metrics = await (await client.get("/metrics")).text()
    assert "polls_created_total" not in metrics

    r = await client.post(
        f"/v1/conversations/{team.conversation_id}/messages",
        json={"content": "still here", "message_type": "text"},
        headers=team.members[0].headers,
    )
    assert r.status == 201, await r.text()
    r = await client.get(
        f"/v1/conversations/{team.conversation_id}/messages", headers=team.owner.headers
    )
    assert r.status == 200 and "still here" in await r.text()


async def test_chat_disabled_while_polls_enabled_stops_startup(sc_app):
    others = {n: False for n in switches_without("chat") if n not in ("chat", "polls")}
    with pytest.raises(ConfigError) as refused:
        sc_app({"plugins": {"chat": False, **others}})
    message = str(refused.value)
    assert "\n" not in message
    assert "'polls' requires plugin 'chat', which is disabled" in message
    assert "`polls = false`" in message
    sc_app({"plugins": {"chat": False, "polls": False, **others}})  # both off is fine


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_options", 1),
        ("max_options", 51),
        ("default_results_visibility", "never"),
        ("expire_interval", 0),
        ("surprise", 1),
    ],
)
def test_bad_settings_stop_startup(sc_app, key, value):
    with pytest.raises(ConfigError, match=key):
        sc_app({"polls": {key: value}})
