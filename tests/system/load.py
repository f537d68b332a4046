"""A steady sender of chat messages over REST, recording every answer and how long it
took; what it was told 201 for is what must never be lost."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tests.plugins.chat.helpers import all_messages

#: no trial is about the send rate limit
UNLIMITED = {"rate_limits": {"classes": {"chat_send": {"per_user": "100000/minute"}}}}


@dataclass
class Sender:
    client: Any
    user: Any
    conversation_id: str
    prefix: str = "m"
    interval: float = 0.02
    #: (content, status or exception name, seconds)
    results: list[tuple[str, object, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self) -> tuple[object, float]:
        content = f"{self.prefix}-{len(self.results)}"
        start = time.perf_counter()
        try:
            r = await self.client.post(
                f"/v1/conversations/{self.conversation_id}/messages",
                json={"content": content, "message_type": "text"},
                headers=self.user.headers)
            await r.read()
            outcome: object = r.status
        except Exception as exc:  # a refused or cut connection is an answer too
            outcome = type(exc).__name__
        elapsed = time.perf_counter() - start
        self.results.append((content, outcome, elapsed))
        return outcome, elapsed

    async def _loop(self) -> None:
        while not self._stop.is_set():
            await self.send()
            await asyncio.sleep(self.interval)

    def start(self) -> Sender:
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    @property
    def acked(self) -> list[str]:
        return [c for c, outcome, _ in self.results if outcome == 201]

    def slowest(self) -> float:
        return max((s for *_, s in self.results), default=0.0)

    def outcomes(self) -> dict[object, int]:
        out: dict[object, int] = {}
        for _, outcome, _ in self.results:
            out[outcome] = out.get(outcome, 0) + 1
        return out

    async def lost(self, client: Any | None = None, reader: Any | None = None) -> list[str]:
        """Acknowledged messages missing from the conversation's history."""
        stored = {m.get("content") for m in await all_messages(
            client or self.client, reader or self.user, self.conversation_id)}
        return [c for c in self.acked if c not in stored]
