"""Helpers that wait for conditions instead of sleeping and hoping."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from ..config import load_settings, override

Predicate = Callable[[dict[str, Any]], bool]


def merge_settings(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, tables merged key by key (a test's settings
    overrides on top of a plugin's defaults)."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_settings(out[key], value)
        else:
            out[key] = value
    return out


def make_settings(overrides: Mapping[str, Any] | None = None, *, data_dir: str | None = None
                  ) -> Any:
    """Settings of the ``testing`` environment (in-memory SQLite, no jobs) plus overrides."""
    base: dict[str, Any] = {}
    if data_dir is not None:
        base["app"] = {"data_dir": data_dir}
    settings = load_settings(env="testing", overrides=base)
    for key, value in _flatten(overrides or {}):
        override(settings, key, value, "the test's overrides")
    return settings


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


async def wait_for(
    condition: Callable[[], Any | Awaitable[Any]],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        await asyncio.sleep(interval)


class FrameTimeout(AssertionError):
    """:meth:`WsTester.expect` saw no matching frame in time (the socket still open)."""


class WsTester:
    """Wraps a client WebSocket: send envelopes, wait for events matching a predicate.

    Frames that arrive while waiting for something else are kept, so nothing is lost
    between two ``expect`` calls.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._counter = 0

    async def send(self, type_: str, data: Any = None, *, id: str | None = None) -> str:
        if id is None:
            self._counter += 1
            id = f"c{self._counter}"
        await self.ws.send_str(json.dumps({"type": type_, "id": id, "data": data or {}}))
        return id

    async def request(self, type_: str, data: Any = None, *, timeout: float = 5.0
                      ) -> dict[str, Any]:
        """Send a frame with an id and wait for its ``ack`` or ``error``."""
        frame_id = await self.send(type_, data)
        return await self.expect(
            lambda f: f.get("id") == frame_id and f.get("type") in ("ack", "error"),
            timeout=timeout,
        )

    async def expect(
        self,
        type_or_pred: str | Predicate,
        where: Predicate | None = None,
        *,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        def match(frame: dict[str, Any]) -> bool:
            if isinstance(type_or_pred, str):
                if frame.get("type") != type_or_pred:
                    return False
            elif not type_or_pred(frame):
                return False
            return where is None or where(frame)

        for i, frame in enumerate(self._pending):
            if match(frame):
                return self._pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout(
                    f"no frame matching {type_or_pred!r} within {timeout} s; "
                    f"got: {[f.get('type') for f in self._pending][-20:]}"
                )
            received = await self._receive(remaining)
            if received is None:
                raise AssertionError(f"socket closed while waiting for {type_or_pred!r} "
                                     f"(close code {self.ws.close_code})")
            if match(received):
                return received
            self._pending.append(received)

    async def expect_nothing(self, type_: str, *, within: float = 0.3,
                             where: Predicate | None = None) -> None:
        """Assert that no frame of ``type_`` (matching ``where``) arrives within ``within``
        seconds. Use after a positive ``expect`` proved the pipeline is flowing."""
        try:
            frame = await self.expect(type_, where, timeout=within)
        except FrameTimeout:
            return  # a closed socket is not "nothing arrived": its AssertionError stands
        raise AssertionError(f"unexpected frame: {frame}")

    async def _receive(self, timeout: float) -> dict[str, Any] | None:
        try:
            msg = await self.ws.receive(timeout=timeout)
        except TimeoutError:
            return {"type": "__timeout__"}
        if msg.type == aiohttp.WSMsgType.TEXT:
            frame: dict[str, Any] = json.loads(msg.data)
            self.seen.append(frame)
            return frame
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
            return None
        return {"type": "__other__"}

    async def close(self) -> None:
        await self.ws.close()
