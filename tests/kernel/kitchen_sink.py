"""A plugin implementing every hook, used by tests/kernel/test_hooks.py.

It records what the kernel hands it in ``kernel.state["sink"]`` so tests can assert
on calls without mocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from dynaconf import Validator
from sqlalchemy import Column, Integer, MetaData, String, Table

from secureconnect import HealthCheck, Job, Kernel, RouteTable, Veto, hookimpl
from secureconnect.http.handlers import json_response
from secureconnect.migrations import MigrationSource
from secureconnect.web.panels import WebPanel

PLUGIN_NAME = "kitchen_sink"
metadata = MetaData()
sink_table = Table("kitchen_sink_items", metadata,
                   Column("id", Integer, primary_key=True), Column("name", String(50)))
routes = RouteTable(tag="kitchen-sink")


def _log(kernel: Kernel, event: str, *args: Any) -> None:
    kernel.state.setdefault("sink", []).append((event, *args))


@routes.get("/v1/sink/ping", auth=False)
async def ping(request: web.Request) -> web.StreamResponse:
    """Answer pong."""
    return json_response({"pong": True})


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return [Validator("kitchen_sink.flavour", is_type_of=str, default="vanilla")]


@hookimpl
def sc_cleanup_ctx(kernel: Kernel) -> list[Any]:
    async def ctx(kernel: Kernel) -> AsyncIterator[None]:
        _log(kernel, "opened")
        yield
        _log(kernel, "closed")

    return [ctx]


@hookimpl
def sc_routes(kernel: Kernel) -> RouteTable:
    return routes


@hookimpl
def sc_ws_handlers(kernel: Kernel) -> dict[str, Any]:
    async def shout(conn: Any, data: dict[str, Any]) -> dict[str, Any]:
        return {"shout": str(data.get("text", "")).upper()}

    return {"sink.shout": shout}


@hookimpl
def sc_jobs(kernel: Kernel) -> list[Job]:
    async def sweep(kernel: Kernel) -> int:
        _log(kernel, "swept")
        return 7

    return [Job("sink.sweep", interval=3600, func=sweep)]


@hookimpl
def sc_health_checks(kernel: Kernel) -> list[HealthCheck]:
    async def check() -> None:
        if kernel.state.get("sink.broken"):
            raise RuntimeError("the sink is blocked")

    return [HealthCheck("kitchen_sink", check, timeout=0.5)]


@hookimpl
def sc_migrations() -> list[MigrationSource]:
    return [MigrationSource("kitchen_sink", metadata, Path(__file__).parent / "sink_migrations")]


@hookimpl
async def sc_migrate(kernel: Kernel) -> list[str]:
    """An external schema: versions applied are remembered in the plugin's state."""
    if kernel.state.get("sink.index_version") == 1:
        return []
    kernel.state["sink.index_version"] = 1
    return ["kitchen_sink (index): 1 create the search index"]


@hookimpl
def sc_template_dirs() -> list[str]:
    return [str(Path(__file__).parent / "templates")]


@hookimpl
def sc_web_panels(kernel: Kernel) -> list[WebPanel]:
    return [WebPanel("kitchen-sink", Path(__file__).parent / "sink_static",
                     scripts=("sink.js",), styles=("sink.css",), title="Kitchen sink")]


@hookimpl
async def sc_authorize_topic(kernel: Kernel, user: Any, topic: str) -> bool | None:
    if not topic.startswith("sink:"):
        return None
    return topic == "sink:open"


@hookimpl
async def sc_ws_connected(kernel: Kernel, conn: Any) -> None:
    _log(kernel, "connected", str(conn.user_id))


@hookimpl
async def sc_ws_disconnected(kernel: Kernel, conn: Any) -> None:
    _log(kernel, "disconnected", str(conn.user_id))


@hookimpl(optionalhook=True)  # chat\'s hook: present only while chat is enabled
async def sc_message_will_be_sent(kernel: Kernel, message: dict[str, Any]) -> Any:
    content = str(message.get("content", ""))
    if "veto-me" in content:
        return Veto("the kitchen sink refuses", code="sink_veto")
    if "crash-me" in content:
        raise RuntimeError("guard crashed")
    if "shout-me" in content:
        return {**message, "content": content.upper()}
    return None


@hookimpl(optionalhook=True)  # chat\'s hook: present only while chat is enabled
async def sc_message_sent(kernel: Kernel, message: dict[str, Any]) -> None:
    _log(kernel, "sent", message.get("id"))
    if "observer-crash" in str(message.get("content", "")):
        raise RuntimeError("observer crashed")


@hookimpl
def sc_user_registered(kernel: Kernel, user: dict[str, Any]) -> None:
    _log(kernel, "registered", str(user.get("id")))


@hookimpl
def sc_user_deleted(kernel: Kernel, user: dict[str, Any]) -> None:
    _log(kernel, "deleted", str(user.get("id")))


