"""``bench/ai.py``: which part of a summary the slow chat sends met.

The server process records when each summary request and its parts ran (the service's
``summary``; chat's read of the window; the model's whole-window call, the worker's
computation with the loop's pickling of the rows; the rest: admission, the drop of the
encrypted messages, the bookkeeping writes) with ``time.perf_counter`` — the machine's
monotonic clock, the same in the bench's process. Each send of a busy round is then put
in one class by what its lifetime (due → answer) overlapped: no summary at all; the
model's call; chat's read; another part. Per class: the sends, their p50/p90/p99 and
the share above the idle rounds' p99 (1 % there by definition). Sends of busy rounds
that met no summary are the in-round control: they should look like idle rounds.
"""

from __future__ import annotations

import bisect
import functools
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

PATH = "/_bench/phases"
_LOG: list[tuple[str, float, float]] = []
#: class of a send → the part of a summary it overlapped, checked in this order
CLASSES = ("window", "read", "rest")


def install(app: web.Application) -> None:
    """In the server process: time the summary's parts; serve and reset the log."""
    from secureconnect_plugins.ai.service import AiService
    from secureconnect_plugins.chat.interface import ChatConversations

    for cls, name, label in ((AiService, "summary", "whole"),
                             (ChatConversations, "texts", "read"),
                             (AiService, "_window", "window")):
        _timed(cls, name, label)
    app.router.add_get(PATH, _report)


def _timed(cls: Any, name: str, label: str) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(*args, **kwargs)
        finally:
            _LOG.append((label, started, time.perf_counter()))

    setattr(cls, name, timed)


async def _report(_request: web.Request) -> web.Response:
    body = list(_LOG)
    _LOG.clear()
    return web.json_response(body)


class Phases:
    """In the bench: the busy rounds' sends (due, answered) and the server's log."""

    def __init__(self) -> None:
        self.sends: list[tuple[float, float]] = []
        self.log: list[tuple[str, float, float]] = []

    def add(self, sends: Iterable[tuple[float, float]], log: Iterable[Any]) -> None:
        self.sends += sends
        self.log += [(str(label), float(a), float(b)) for label, a, b in log]

    def report(self, idle_p99: float) -> list[str]:
        spans = {label: sorted((a, b) for name, a, b in self.log if name == label)
                 for label in ("whole", "read", "window")}
        classes: dict[str, list[float]] = {"none": [], **{c: [] for c in CLASSES}}
        for due, done in self.sends:
            classes[_class_of(spans, due, done)].append(done - due)
        names = {"none": "no summary under way", "window": "the model's call (worker)",
                 "read": "chat's read of the window (loop)", "rest": "the rest of a summary"}
        lines = []
        for kind, latencies in classes.items():
            if not latencies:
                continue
            above = sum(x > idle_p99 for x in latencies) / len(latencies)
            lines.append(f"{names[kind]:36s} n={len(latencies):6d} p50 {_ms(latencies, 0.5)} "
                         f"p90 {_ms(latencies, 0.9)} p99 {_ms(latencies, 0.99)}; above the "
                         f"idle p99: {above:.1%}")
        return lines


def _class_of(spans: dict[str, list[tuple[float, float]]], due: float, done: float) -> str:
    if not _overlaps(spans["whole"], due, done):
        return "none"
    for kind in CLASSES[:-1]:
        if _overlaps(spans[kind], due, done):
            return kind
    return "rest"


def _overlaps(spans: list[tuple[float, float]], start: float, end: float) -> bool:
    """Whether a span (sorted by start) overlaps [start, end]: of those begun by ``end``,
    one still running at ``start`` (however long ago it began)."""
    return any(b >= start for _, b in spans[:bisect.bisect_right(spans, (end, end))])


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:5.2f} ms"
