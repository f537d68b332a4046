"""The seams other plugins build on: hooks a plugin declares (sc_addhooks), the one
ordering rule for guards, declared dependencies between plugins, and chat's participant
hooks reaching observers on every instance."""

from __future__ import annotations

from typing import Any

import pluggy
import pytest

from secureconnect import Veto, hookimpl, kernel_of
from secureconnect.app import KERNEL, create_app
from secureconnect.errors import ConfigError
from secureconnect.testing import make_settings, wait_for
from secureconnect_plugins.chat.api import CONVERSATIONS

from ..plugins.chat.helpers import create_group, send, users

hookspec = pluggy.HookspecMarker("secureconnect")


class Specs:
    @hookspec
    def sc_sink_custom(self, kernel: Any, value: int) -> int:  # type: ignore[empty-body]
        """A hook offered by one plugin to others."""


class Offers:
    PLUGIN_NAME = "offers"

    @hookimpl
    def sc_addhooks(self, pm: pluggy.PluginManager) -> None:
        pm.add_hookspecs(Specs)


class Uses:
    PLUGIN_NAME = "uses"
    REQUIRES = ("offers",)

    @hookimpl
    def sc_sink_custom(self, value: int) -> int:
        return value * 2


async def test_hook_sc_addhooks(sc_client):
    # the implementing plugin may be registered before the one that adds the spec
    client = await sc_client(plugins=[Uses(), Offers()])
    assert await client.app[KERNEL].call("sc_sink_custom", value=21) == [42]
    # without the offering plugin, an implementation of its hook is a start-up error
    with pytest.raises(pluggy.PluginValidationError, match="sc_sink_custom"):
        create_app(make_settings(), plugins=[type("Alone", (), {
            "PLUGIN_NAME": "alone", "sc_sink_custom": hookimpl(lambda self, value: value)})()])


def _guard(name: str, mark: str) -> object:
    class Guard:
        PLUGIN_NAME = name

        @hookimpl
        def sc_message_will_be_sent(self, message: dict[str, Any]) -> Any:
            content = message["content"]
            if "veto" in content and mark == "b":
                return Veto("b says no", code="b_says_no")
            if "crash" in content and mark == "a":
                raise RuntimeError("guard a crashed")
            return {"content": f"{content}+{mark}"}

    return Guard()


@pytest.mark.parametrize(("order", "expected"), [("ab", "hi+a+b"), ("ba", "hi+b+a")])
async def test_guards_run_in_plugin_order_and_fail_closed(sc_client, file_db, order, expected):
    guards = {"a": _guard("guard_a", "a"), "b": _guard("guard_b", "b")}
    client = await sc_client(file_db, plugins=[guards[m] for m in order])
    owner, member = await users(client, 2)
    cid = await create_group(client, owner, [member])
    message = await send(client, owner, cid, "hi")
    assert message["content"] == expected  # each guard saw the previous rewrite
    r = await client.post(f"/v1/conversations/{cid}/messages", headers=owner.headers,
                          json={"content": "veto me", "message_type": "text"})
    assert r.status == 422 and (await r.json())["code"] == "b_says_no"
    r = await client.post(f"/v1/conversations/{cid}/messages", headers=owner.headers,
                          json={"content": "crash me", "message_type": "text"})
    assert r.status == 503 and (await r.json())["code"] == "message_rejected"
    r = await client.get(f"/v1/conversations/{cid}/messages", headers=owner.headers)
    assert [m["content"] for m in (await r.json())["messages"]] == [expected]  # nothing else


def _recorder(name: str, requires: tuple[str, ...], log: list[Any]) -> object:
    class Recorder:
        PLUGIN_NAME = name
        REQUIRES = requires

        @hookimpl
        def sc_cleanup_ctx(self, kernel: Any) -> list[Any]:
            async def ctx(kernel: Any) -> Any:
                log.append(("open", name, kernel.provides(CONVERSATIONS)))
                yield
                log.append(("close", name))

            return [ctx]

    return Recorder()


async def test_declared_requirements_order_start_up_and_shutdown(aiohttp_client, sc_app):
    log: list[Any] = []
    # passed in the "wrong" order: the dependency still opens first and closes last
    app = sc_app(plugins=[_recorder("upper", ("lower", "chat"), log),
                          _recorder("lower", ("chat",), log)])
    client = await aiohttp_client(app)
    assert log == [("open", "lower", True), ("open", "upper", True)]
    await client.close()
    assert log[2:] == [("close", "upper"), ("close", "lower")]


def test_requirement_problems_stop_start_up_in_one_line():
    with pytest.raises(ConfigError, match=r"'ghost'.*requires plugin 'nowhere', which is "
                                          r"not installed"):
        create_app(make_settings(), plugins=[_recorder("ghost", ("nowhere",), [])])
    with pytest.raises(ConfigError, match=r"require each other in a circle: x -> y -> x"):
        create_app(make_settings(), plugins=[_recorder("x", ("y",), []),
                                             _recorder("y", ("x",), [])])


async def test_hook_sc_participant_added(sc_client, file_db):
    client = await sc_client(file_db)
    owner, member, late = await users(client, 3)
    cid = await create_group(client, owner, [member])
    r = await client.post(f"/v1/conversations/{cid}/participants", headers=owner.headers,
                          json={"user_id": late.user_id})
    assert r.status in (200, 201), await r.text()
    events = kernel_of_client(client).state.setdefault("example_roster.events", [])
    await wait_for(lambda: len(events) >= 3, timeout=5, message="three additions observed")
    assert sorted(e for e in events if e[0] == "added") == sorted([
        ("added", cid, owner.user_id, "owner", True),
        ("added", cid, member.user_id, "member", True),
        ("added", cid, late.user_id, "member", True),
    ])
    # the example plugin lists the roster through chat's interface, to participants only
    r = await client.get(f"/v1/example/conversations/{cid}/roster", headers=late.headers)
    assert r.status == 200
    assert {p["user_id"]: p["role"] for p in (await r.json())["participants"]} == {
        owner.user_id: "owner", member.user_id: "member", late.user_id: "member"}
    outsider, = await users(client, 1)
    r = await client.get(f"/v1/example/conversations/{cid}/roster", headers=outsider.headers)
    assert r.status == 403 and (await r.json())["code"] == "not_a_participant"


async def test_hook_sc_participant_removed(sc_client, file_db):
    client = await sc_client(file_db)
    owner, member = await users(client, 2)
    cid = await create_group(client, owner, [member])
    r = await client.delete(f"/v1/conversations/{cid}/participants/{member.user_id}",
                            headers=owner.headers)
    assert r.status == 204
    events = kernel_of_client(client).state.setdefault("example_roster.events", [])
    await wait_for(lambda: any(e[0] == "removed" for e in events), timeout=5,
                   message="the removal observed")
    assert [e for e in events if e[0] == "removed"] == [
        ("removed", cid, member.user_id, owner.user_id, True)]


async def test_hook_sc_conversation_deleted(sc_client, file_db):
    client = await sc_client(file_db)
    owner, member = await users(client, 2)
    cid = await create_group(client, owner, [member])
    for user in (member, owner):  # everyone leaves
        r = await client.delete(f"/v1/conversations/{cid}/participants/{user.user_id}",
                                headers=user.headers)
        assert r.status == 204
    events = kernel_of_client(client).state.setdefault("example_roster.events", [])
    await wait_for(lambda: ("deleted", cid, True) in events, timeout=5,
                   message="the empty conversation announced as deleted")
    assert events.count(("deleted", cid, True)) == 1


@pytest.mark.redis
async def test_participant_removed_on_one_instance_runs_observers_on_another(
        sc_client, redis_server, tmp_path):
    shared = {
        "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/shared.db"},
        "redis": {"url": redis_server.url},
        "auth": {"jwt_secret": "two-instances-share-this-secret-0123456789"},
    }
    first = await sc_client(shared)
    second = await sc_client(shared)
    owner, member = await users(first, 2)
    cid = await create_group(first, owner, [member])
    r = await first.delete(f"/v1/conversations/{cid}/participants/{member.user_id}",
                           headers=owner.headers)
    assert r.status == 204
    on_b = kernel_of_client(second).state.setdefault("example_roster.events", [])
    on_a = kernel_of_client(first).state.setdefault("example_roster.events", [])
    removed = ("removed", cid, member.user_id, owner.user_id)
    await wait_for(lambda: (*removed, False) in on_b, timeout=5,
                   message="instance B's observer ran for a removal made on A")
    await wait_for(lambda: (*removed, True) in on_a, timeout=5, message="and A's, as local")
    assert on_b.count((*removed, False)) == 1 and (*removed, True) not in on_b


@pytest.fixture
def file_db(tmp_path: Any) -> dict[str, Any]:
    return {"database": {"url": f"sqlite+aiosqlite:///{tmp_path}/seams.db"}}


def kernel_of_client(client: Any) -> Any:
    return client.app[KERNEL]


def test_kernel_of_is_the_apps_kernel(sc_app):
    app = sc_app()

    class Req:
        pass

    request = Req()
    request.app = app  # type: ignore[attr-defined]
    assert kernel_of(request) is app[KERNEL]  # type: ignore[arg-type]


async def test_trace_plugins_logs_every_hook_call(sc_client, file_db, caplog):
    import logging

    caplog.set_level(logging.DEBUG, logger="secureconnect.hooks")
    client = await sc_client({**file_db, "logging": {"trace_plugins": True}},
                             plugins=[Uses(), Offers()])
    await client.app[KERNEL].call("sc_sink_custom", value=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "secureconnect.hooks"]
    assert "hook sc_sink_custom: plugin 'uses' returned 4" in lines
    assert any(line.startswith("hook sc_routes: plugin 'core' registered") for line in lines)
