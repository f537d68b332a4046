"""``secureconnect new-plugin NAME``: a plugin package that works and is tested from
the first minute.

It writes ``sc-NAME/`` with ``pyproject.toml`` (the ``secureconnect`` entry point and
pytest settings), ``sc_NAME/__init__.py`` (a settings validator, a route with a
request model, a WebSocket handler and a periodic job) and ``tests/test_NAME.py``
(exercising each through ``secureconnect.testing``). ``pip install -e sc-NAME`` then
makes it part of every app; ``pytest`` in the folder passes as generated.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "sc-{dash}"
version = "0.1.0"
description = "The {name} plugin for SecureConnect"
requires-python = ">=3.11"
dependencies = ["secureconnect"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-aiohttp>=1.0.5", "pytest-asyncio>=0.23"]

# SecureConnect finds the plugin through this entry point (name = settings table)
[project.entry-points.secureconnect]
{name} = "sc_{name}"

[tool.setuptools]
packages = ["sc_{name}"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
'''

INIT = '''\
"""The {name} plugin: a route, a WebSocket event, a periodic job and its settings.

Settings live in the ``[default.{name}]`` table (defaults below, in ``default=``).
Hook implementations only; put the logic in a ``service.py`` as it grows.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from dynaconf import Validator
from pydantic import BaseModel, Field

from secureconnect import Job, Kernel, RouteTable, hookimpl, kernel_of, user_id_of
from secureconnect.http.handlers import json_response

#: the plugin's name: its entry point, settings table and [plugins] switch
PLUGIN_NAME = "{name}"

routes = RouteTable(tag="{name}")


class GreetIn(BaseModel):
    """The JSON body of POST /v1/{dash}/greet: validated before the handler runs
    (a bad body is a 422 problem); the handler receives the model as ``body``."""

    who: str = Field(min_length=1, max_length=100)


@routes.get("/v1/{dash}/hello")
async def hello(request: web.Request) -> web.StreamResponse:
    """Greet the caller (needs an access token: routes require one unless auth=False)."""
    kernel = kernel_of(request)
    return json_response({{"hello": kernel.settings.{name}.greeting,
                          "user_id": str(user_id_of(request)),
                          "ticks": kernel.state.get("{name}.ticks", 0)}})


@routes.post("/v1/{dash}/greet", body=GreetIn)
async def greet(request: web.Request, body: GreetIn) -> web.StreamResponse:
    """Greet someone by name."""
    greeting = kernel_of(request).settings.{name}.greeting
    return json_response({{"greeting": f"{{greeting}}, {{body.who}}"}})


async def echo(conn: Any, data: dict[str, Any]) -> dict[str, Any]:
    """WebSocket frame ``{name}.echo``: the return value is the ack's data."""
    return {{"echo": str(data.get("text", ""))}}


async def tick(kernel: Kernel) -> int:
    """Job ``{name}.tick``: ``async def job(kernel) -> int | None`` (items handled)."""
    kernel.state["{name}.ticks"] = kernel.state.get("{name}.ticks", 0) + 1
    return 1


@hookimpl
def sc_settings_validators() -> list[Validator]:
    return [
        Validator("{name}.greeting", is_type_of=str, len_min=1, default="hello"),
        Validator("{name}.tick_interval", is_type_of=(int, float), gt=0, default=60),
    ]


@hookimpl
def sc_routes(kernel: Kernel) -> RouteTable:
    return routes


@hookimpl
def sc_ws_handlers(kernel: Kernel) -> dict[str, Any]:
    return {{"{name}.echo": echo}}


@hookimpl
def sc_jobs(kernel: Kernel) -> list[Job]:
    return [Job("{name}.tick", interval=float(kernel.settings.{name}.tick_interval),
                func=tick)]
'''

TEST = '''\
"""The {name} plugin through real HTTP and WebSocket (secureconnect.testing)."""

from __future__ import annotations

import pytest

import sc_{name}
from secureconnect.errors import ConfigError
from secureconnect.http.context import KERNEL
from secureconnect.testing.accounts import register_and_login

SETTINGS = {{"{name}": {{"greeting": "hi"}}}}


async def test_route_answers_with_the_setting(sc_client):
    client = await sc_client(SETTINGS, plugins=[sc_{name}])
    user = await register_and_login(client)
    r = await client.get("/v1/{dash}/hello", headers=user.headers)
    assert r.status == 200
    assert (await r.json())["hello"] == "hi"
    assert (await client.get("/v1/{dash}/hello")).status == 401


async def test_request_model_validates_the_body(sc_client):
    client = await sc_client(SETTINGS, plugins=[sc_{name}])
    user = await register_and_login(client)
    r = await client.post("/v1/{dash}/greet", json={{"who": "Ada"}}, headers=user.headers)
    assert (await r.json()) == {{"greeting": "hi, Ada"}}
    r = await client.post("/v1/{dash}/greet", json={{"who": ""}}, headers=user.headers)
    assert r.status == 422


async def test_websocket_handler_acks(sc_client, sc_ws):
    client = await sc_client(SETTINGS, plugins=[sc_{name}])
    user = await register_and_login(client)
    ws = await sc_ws(client, user.access_token)
    ack = await ws.request("{name}.echo", {{"text": "ping"}})
    assert ack["data"] == {{"echo": "ping"}}


async def test_job_runs(sc_client):
    client = await sc_client(SETTINGS, plugins=[sc_{name}])
    kernel = client.app[KERNEL]
    assert await kernel.jobs.run("{name}.tick", raise_errors=True) == 1
    assert kernel.state["{name}.ticks"] == 1


def test_settings_are_validated(sc_app):
    with pytest.raises(ConfigError, match="{name}.greeting"):
        sc_app({{"{name}": {{"greeting": 5}}}}, plugins=[sc_{name}])
'''

README = '''\
# sc-{dash}

A SecureConnect plugin. Develop it:

    pip install -e ".[test]"     # SecureConnect now loads it in every app
    pytest                       # its tests
    secureconnect plugins        # listed as `{name}`

Its settings go in `[default.{name}]` (e.g. `greeting = "hello"`); switch it off with
`{name} = false` under `[default.plugins]`.
'''


def check_name(name: str) -> str:
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(
            f"plugin name {name!r} must be 2-31 lower-case letters, digits or _ and start "
            "with a letter (it names the package, the settings table and the switch)"
        )
    return name


def write_plugin(name: str, parent: Path) -> Path:
    """Create ``parent/sc-NAME``; raises :class:`FileExistsError` when it exists."""
    check_name(name)
    dash = name.replace("_", "-")
    root = parent / f"sc-{dash}"
    if root.exists():
        raise FileExistsError(f"{root} exists; choose another name or folder")
    values = {"name": name, "dash": dash}
    files = {
        root / "pyproject.toml": PYPROJECT,
        root / f"sc_{name}" / "__init__.py": INIT,
        root / "tests" / f"test_{name}.py": TEST,
        root / "README.md": README,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return root
