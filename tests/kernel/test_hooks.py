"""Each hook exercised through the kitchen-sink plugin (test names: test_hook_<hook>)."""

from __future__ import annotations

import pytest

from secureconnect import Veto
from secureconnect.app import KERNEL, create_app
from secureconnect.errors import ConfigError
from secureconnect.testing import make_settings

from . import kitchen_sink


async def test_hook_sc_settings_validators(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    assert client.app[KERNEL].settings.kitchen_sink.flavour == "vanilla"
    with pytest.raises(ConfigError, match=r"kitchen_sink\.flavour"):
        create_app(make_settings({"kitchen_sink": {"flavour": 3}}), plugins=[kitchen_sink])


async def test_hook_sc_cleanup_ctx(aiohttp_client, sc_app):
    app = sc_app(plugins=[kitchen_sink])
    client = await aiohttp_client(app)
    assert ("opened",) in app[KERNEL].state["sink"]
    await client.close()
    assert app[KERNEL].state["sink"][-1] == ("closed",)


async def test_hook_sc_routes(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    r = await client.get("/v1/sink/ping")
    assert r.status == 200 and (await r.json()) == {"pong": True}


async def test_hook_sc_ws_handlers(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    assert "sink.shout" in client.app[KERNEL].ws.handlers


async def test_hook_sc_jobs(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    assert await kernel.jobs.run("sink.sweep") == 7
    assert ("swept",) in kernel.state["sink"]
    assert kernel.metrics.value("job_runs_total", {"job": "sink.sweep", "status": "success"}) == 1


async def test_hook_sc_health_checks(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    r = await client.get("/health/ready")
    assert r.status == 200
    assert (await r.json())["checks"]["kitchen_sink"]["status"] == "ok"
    client.app[KERNEL].state["sink.broken"] = True
    r = await client.get("/health/ready")
    assert r.status == 503
    body = await r.json()
    assert body["failed"] == ["kitchen_sink"] and body["code"] == "not_ready"
    assert "blocked" in body["checks"]["kitchen_sink"]["error"]


async def test_hook_sc_migrations(sc_client):
    from sqlalchemy import text

    client = await sc_client(plugins=[kitchen_sink])
    async with client.app[KERNEL].db.connect() as conn:
        await conn.execute(text("INSERT INTO kitchen_sink_items (name) VALUES ('spoon')"))
        rows = (await conn.execute(text("SELECT name FROM kitchen_sink_items"))).all()
    assert [r[0] for r in rows] == ["spoon"]


async def test_hook_sc_migrate(sc_client):
    from secureconnect.store.schema import migrate

    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    assert "kitchen_sink (index): 1 create the search index" in await migrate(kernel)
    assert await migrate(kernel) == []  # SQL already at head (auto-migrated), index too


async def test_hook_sc_template_dirs(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    from secureconnect.app import render_template

    html = render_template(client.app, "kitchen_sink_hello.html", {"name": "sink"})
    assert "hello sink" in html


async def test_hook_sc_message_will_be_sent(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    results = await kernel.call("sc_message_will_be_sent", message={"content": "veto-me"})
    assert Veto("the kitchen sink refuses", code="sink_veto") in results
    results = await kernel.call("sc_message_will_be_sent", message={"content": "shout-me"})
    assert {"content": "SHOUT-ME"} in results
    with pytest.raises(RuntimeError, match="guard crashed"):
        await kernel.call("sc_message_will_be_sent", message={"content": "crash-me"})


async def test_hook_sc_message_sent(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    await kernel.notify("sc_message_sent", message={"id": "m1", "content": "observer-crash"})
    assert ("sent", "m1") in kernel.state["sink"]
    assert (
        kernel.metrics.value(
            "plugin_hook_errors_total", {"hook": "sc_message_sent", "plugin": "kitchen_sink"}
        )
        == 1
    )


async def test_hook_sc_user_registered(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    await kernel.notify("sc_user_registered", user={"id": "u1"})
    assert ("registered", "u1") in kernel.state["sink"]


async def test_hook_sc_user_deleted(sc_client):
    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    await kernel.notify("sc_user_deleted", user={"id": "u1"})
    assert ("deleted", "u1") in kernel.state["sink"]


async def test_hook_sc_authorize_topic(sc_client, sc_ws):
    from secureconnect.testing.accounts import register_and_login

    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    refused = await ws.request("subscribe", {"topic": "sink:closed"})
    assert refused["type"] == "error" and refused["data"]["code"] == "topic_forbidden"
    assert (await ws.request("subscribe", {"topic": "sink:open"}))["type"] == "ack"
    await kernel.ws.publish("sink:closed", "sink.event", {"topic": "closed"})
    await kernel.ws.publish("sink:open", "sink.event", {"topic": "open"})
    assert (await ws.expect("sink.event"))["data"] == {"topic": "open"}
    await ws.expect_nothing("sink.event")


async def test_hook_sc_ws_connected(sc_client, sc_ws):
    from secureconnect.testing import wait_for
    from secureconnect.testing.accounts import register_and_login

    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    await sc_ws(client, user.access_token)
    await wait_for(lambda: ("connected", user.user_id) in kernel.state.get("sink", []))


async def test_hook_sc_ws_disconnected(sc_client, sc_ws):
    from secureconnect.testing import wait_for
    from secureconnect.testing.accounts import register_and_login

    client = await sc_client(plugins=[kitchen_sink])
    kernel = client.app[KERNEL]
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    await wait_for(lambda: ("connected", user.user_id) in kernel.state.get("sink", []))
    await ws.close()
    await wait_for(lambda: ("disconnected", user.user_id) in kernel.state["sink"])
    assert not kernel.ws.connections
