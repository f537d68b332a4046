"""A fake OpenAI-compatible provider: a real aiohttp server on loopback that records
the raw bytes of every request and answers ``/v1/chat/completions`` as SSE.

``mode``: ``ok`` (stream an answer), ``hang`` (send headers, then stay silent),
``fail`` (HTTP 500), ``raw`` (send ``raw_stream`` as the event stream, as it is).
``answer(body)`` builds the text from the parsed request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web


def default_answer(body: dict[str, Any]) -> str:
    system = body["messages"][0]["content"]
    data = json.loads(body["messages"][1]["content"])
    if "suggest" in system:
        return json.dumps(["Sounds good!", "Let me check.", "Thanks!"])
    if "merge" in system:
        return "Merged: " + " | ".join(str(p)[:40] for p in data)
    seqs = [m["seq"] for m in data]
    return f"Part covering [#{seqs[0]}] to [#{seqs[-1]}] ({len(seqs)} messages)."


class FakeOpenAI:
    def __init__(self) -> None:
        self.mode = "ok"
        self.raw: list[bytes] = []
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answer: Callable[[dict[str, Any]], str] = default_answer
        self.server: Any = None
        self.raw_stream = b""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.completions)
        return app

    @property
    def base_url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def calls(self) -> int:
        return len(self.raw)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.raw.append(raw)
        self.headers.append(dict(request.headers))
        body = json.loads(raw)
        self.bodies.append(body)
        if self.mode == "fail":
            return web.json_response({"error": "boom"}, status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if self.mode == "hang":
            await asyncio.sleep(3600)  # cancelled when the client goes away
        if self.mode == "raw":
            await resp.write(self.raw_stream)
            await resp.write_eof()
            return resp
        text = self.answer(body)
        for i in range(0, len(text), 7):  # several chunks, as real servers stream
            chunk = {"choices": [{"index": 0, "delta": {"content": text[i : i + 7]}}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"prompt_tokens": len(raw) // 4, "completion_tokens": len(text) // 4}
        final = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": usage}
        await resp.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp
