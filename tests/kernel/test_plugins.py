"""Plugin manager: third-party entry points, enable/disable, clashes, introspection."""

from __future__ import annotations

import pytest
from aiohttp import web

from secureconnect import RouteTable, Veto, hookimpl
from secureconnect.app import KERNEL, create_app
from secureconnect.errors import ConfigError
from secureconnect.plugins import describe_plugins
from secureconnect.testing import make_settings


async def test_third_party_plugin_from_entry_point(sc_client, sc_ws):
    """sc-example-plugin is a separately packaged plugin installed for the test run:
    its route, job, health check and message guard work with no kernel change."""
    client = await sc_client()
    kernel = client.app[KERNEL]
    info = {i.name: i for i in describe_plugins(kernel.pm, kernel.settings)}
    assert info["example"].version == "1.2.3" and info["example"].enabled
    assert "sc_routes" in info["example"].hooks
    assert "example.echo" in kernel.ws.handlers
    assert await kernel.jobs.run("example.tick") == 1
    r = await client.get("/health/ready")
    assert (await r.json())["checks"]["example"]["status"] == "ok"
    results = await kernel.call("sc_message_will_be_sent",
                                message={"content": "a forbidden-word here"})
    assert any(isinstance(v, Veto) and v.code == "example_banned_word" for v in results)
    r = await client.get("/v1/example/hello")
    assert r.status == 401  # plugin routes need a token by default


async def test_disabling_a_plugin_removes_its_routes(sc_client):
    client = await sc_client({"plugins": {"example": False}})
    r = await client.get("/v1/example/hello")
    assert r.status == 404
    kernel = client.app[KERNEL]
    info = {i.name: i for i in describe_plugins(kernel.pm, kernel.settings)}
    assert info["example"].enabled is False
    assert "example.echo" not in kernel.ws.handlers


def test_essential_plugin_cannot_be_disabled():
    with pytest.raises(ConfigError, match=r"plugins\.auth.*essential"):
        create_app(make_settings({"plugins": {"auth": False}}))


def test_unknown_plugin_name_is_an_error():
    with pytest.raises(ConfigError, match=r"plugins\.exampel.*names no installed plugin"):
        create_app(make_settings({"plugins": {"exampel": False}}))


class Clash:
    PLUGIN_NAME = "clash"
    routes = RouteTable()

    @staticmethod
    @routes.get("/health/live", auth=False)
    async def live(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    @hookimpl
    def sc_routes(self) -> RouteTable:
        return self.routes


def test_route_clash_names_both_plugins():
    with pytest.raises(ConfigError, match=r"GET /health/live is declared by both") as exc:
        create_app(make_settings(), plugins=[Clash()])
    assert "'core'" in str(exc.value) and "'clash'" in str(exc.value)


class WsClash:
    PLUGIN_NAME = "wsclash"

    @hookimpl
    def sc_ws_handlers(self) -> dict[str, object]:
        async def h(conn: object, data: object) -> None:
            return None

        return {"example.echo": h}


def test_ws_event_clash_names_both_plugins():
    with pytest.raises(ConfigError, match=r"'example.echo' is handled by both") as exc:
        create_app(make_settings(), plugins=[WsClash()])
    assert "'example'" in str(exc.value) and "'wsclash'" in str(exc.value)


class Misspelt:
    PLUGIN_NAME = "misspelt"

    @hookimpl
    def sc_routs(self) -> list[object]:  # typo: not a hook
        return []


def test_misspelt_hook_fails_at_start_up():
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError, match="sc_routs"):
        create_app(make_settings(), plugins=[Misspelt()])
