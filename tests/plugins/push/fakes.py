"""A fake push provider the tests run as a real HTTP server on loopback.

One aiohttp app serves every provider's wire format:

* ``POST /token`` — an OAuth token endpoint (FCM's ``token_uri``); counts fetches.
* ``POST /v1/projects/{project}/messages:send`` — FCM HTTP v1.
* ``POST /hook/{name}`` — a webhook gateway (Sygnal style).
* ``POST /wp/{name}`` — a Web Push endpoint.

Every request is recorded with its raw body bytes. ``script`` decides answers: a
callable ``(kind, request_record) -> (status, json|None, headers)`` or ``None`` for
"accept". The server can be stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Answer = tuple[int, Any, dict[str, str]]


@dataclass
class Received:
    kind: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeProvider:
    received: list[Received] = field(default_factory=list)
    token_fetches: int = 0
    script: Callable[[Received], Answer | None] | None = None
    hang: bool = False
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._handle("fcm"))
        app.router.add_post("/hook/{name}", self._handle("webhook"))
        app.router.add_post("/wp/{name}", self._handle("webpush"))
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        self.token_fetches += 1
        return web.json_response({"access_token": f"oauth-{self.token_fetches}",
                                  "expires_in": 3600, "token_type": "Bearer"})

    def _handle(self, kind: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            rec = Received(kind, request.path, dict(request.headers), body,
                           asyncio.get_running_loop().time())
            self.received.append(rec)
            if self.hang:
                await asyncio.sleep(3600)
            answer = self.script(rec) if self.script else None
            if answer is None:
                return web.json_response({"name": "ok"} if kind == "fcm" else {})
            status, data, headers = answer
            return web.json_response(data, status=status, headers=headers)

        return handler
